"""``stanch rerun INCIDENT``: run a stored incident through ``handle-incident`` again.

Safe because every action is claimed in the store under its idempotency key (incident,
action, target): finished actions are replayed, only unfinished ones reach the vendor.
Earlier runs of the incident that Prefect still shows live are first marked Crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from cyclopts import Parameter
from rich.console import Console

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from flows.models import Incident
    from flows.settings import StanchSettings
    from flows.store import Store

# No markup: run names carry incident titles, which come from attacker-controlled alerts.
out = Console(soft_wrap=True, highlight=False, markup=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)

FLOW_NAME = "handle-incident"
HEARTBEATS_BEFORE_GONE = 3
"""Missed flow-run heartbeats after which a run's process counts as gone."""
DEFAULT_HEARTBEAT_SECONDS = 180
RERUN_TAG = "stanch-rerun"


class RerunRefused(Exception):
    """The rerun did not start: no such incident, or an earlier run may still be alive."""


@dataclass(frozen=True)
class PreviousRun:
    """An earlier ``handle-incident`` run of the incident that Prefect shows as not finished.

    Attributes:
        id: the flow run id.
        name: the flow run name (``INC-… title``).
        state: the state name Prefect shows (``Running``, ``Paused`` ...).
        last_sign_of_life: the latest of its state's timestamp and the newest event about
            it or its task runs (heartbeats, state changes).
    """

    id: UUID
    name: str
    state: str
    last_sign_of_life: datetime

    def silent_for(self, now: datetime) -> float:
        """Seconds since the run last showed a sign of life."""
        return (now - self.last_sign_of_life).total_seconds()


@dataclass(frozen=True)
class Superseded:
    """A previous run this rerun marked Crashed, and why it was judged gone."""

    id: str
    name: str
    state: str
    silent_seconds: float
    forced: bool


def default_stale_after() -> float:
    """Seconds of silence after which a run's process counts as gone.

    The flow engine emits a ``prefect.flow-run.heartbeat`` event every
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (180 by default, at least 30) while the
    process lives, paused or not; a run that has missed three in a row has no process.
    Three rather than one, because events are shipped in batches by a background worker
    that a loaded machine can delay.
    """
    from prefect.settings import get_current_settings

    every = get_current_settings().flows.heartbeat_frequency or DEFAULT_HEARTBEAT_SECONDS
    return float(HEARTBEATS_BEFORE_GONE * max(every, 30))


def alive(runs: Sequence[PreviousRun], *, now: datetime, stale_after: float) -> list[PreviousRun]:
    """The runs that showed a sign of life within the last ``stale_after`` seconds."""
    return [r for r in runs if r.silent_for(now) < stale_after]


async def _last_event(client: PrefectClient, run: FlowRun) -> datetime | None:
    from prefect.events.filters import (
        EventAnyResourceFilter,
        EventFilter,
        EventOccurredFilter,
        EventOrder,
    )

    since = run.created or datetime.now(UTC) - timedelta(days=1)
    page = await client.read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
            # Task-run events name their flow run as a related resource, so this also
            # sees a run that is busy in its tasks between heartbeats.
            any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            order=EventOrder.DESC,
        ),
        limit=1,
    )
    return page.events[0].occurred if page.events else None


def _handles(run: FlowRun, incident: Incident) -> bool:
    """Whether ``run`` was started for this very incident, not a namesake.

    Incident ids are allocated per store, so two stores that share a Prefect server
    (a test run, a second tenant stack) both have an INC-…-0001; the run's ``incident``
    parameter tells them apart by tenant and creation time.
    """
    given = run.parameters.get("incident")
    if not isinstance(given, dict):
        return False
    try:
        created = datetime.fromisoformat(str(given.get("created_at")))
    except ValueError:
        return False
    return (
        given.get("id") == incident.id
        and given.get("tenant") == incident.tenant
        and created == incident.created_at
    )


async def unfinished_runs(
    client: PrefectClient, incident: Incident, recorded: str | None
) -> list[PreviousRun]:
    """The incident's ``handle-incident`` runs that Prefect shows in a non-final state.

    The run the store recorded, and any run started with this incident as its parameter:
    a run killed before its detect stage saved its id is found that way.
    """
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterName,
    )
    from prefect.exceptions import ObjectNotFound

    found = {
        r.id: r
        for r in await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            # Runs are named "<incident id> <title>"; the name narrows the search.
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=incident.id)),
        )
        if _handles(r, incident)
    }
    if recorded is not None and UUID(recorded) not in found:
        with contextlib.suppress(ObjectNotFound):
            run = await client.read_flow_run(UUID(recorded))
            found[run.id] = run
    runs: list[PreviousRun] = []
    for run in found.values():
        if run.state is None or run.state.is_final():
            continue
        last = run.state.timestamp
        event = await _last_event(client, run)
        if event is not None and event > last:
            last = event
        runs.append(PreviousRun(run.id, run.name, run.state.name or run.state.type.value, last))
    return sorted(runs, key=lambda r: r.last_sign_of_life)


async def supersede(
    client: PrefectClient,
    runs: Sequence[PreviousRun],
    *,
    incident_id: str,
    now: datetime,
    operator: str,
    stale_after: float,
) -> list[Superseded]:
    """Mark each run Crashed, saying why it was judged gone (or that it was forced)."""
    from prefect.states import Crashed

    done: list[Superseded] = []
    for run in runs:
        silent = run.silent_for(now)
        forced = silent < stale_after
        why = (
            f"forced by {operator}, last sign of life {silent:.0f}s ago"
            if forced
            else f"no sign of life for {silent:.0f}s, its process is gone"
        )
        message = (
            f"Marked Crashed by `stanch rerun {incident_id}` ({why}); "
            "the incident is handled again in a new flow run"
        )
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        done.append(Superseded(str(run.id), run.name, run.state, round(silent, 1), forced))
    return done


async def expire_pending_approvals(store: Store, incident_id: str) -> list[str]:
    """Expire the incident's pending approval requests (store and ledger); return their ids.

    Called once no earlier run is left to answer them: a paused run's request would
    otherwise stay pending, `stanch approvals` would list it, and a decision would try
    to resume a run that is gone. The rerun asks again for what it still needs.
    """
    from flows.ledger import Ledger

    expired: list[str] = []
    for approval in await store.approvals(incident_id=incident_id, status="pending"):
        reason = (
            f"flow run {approval.flow_run_id} is gone; superseded by `stanch rerun {incident_id}`"
        )
        if await store.decide_approval(
            approval.id, status="expired", decided_by="stanch:rerun", reason=reason
        ):
            await Ledger(store).append_decision(
                approval_id=approval.id,
                incident_id=incident_id,
                tenant=approval.tenant,
                status="expired",
                approvers=[],
                plan_sha256s=list(approval.plans.get("sha256s", [])),
                reason=reason,
            )
            expired.append(approval.id)
    return expired


@dataclass
class RerunOutcome:
    """What ``stanch rerun`` did."""

    incident_id: str
    flow_run_id: str | None
    state: str
    superseded: list[Superseded]
    expired_approvals: list[str]
    summary: dict[str, Any] | None
    error: BaseException | None
    report: dict[str, str]


def _reports_written(settings: StanchSettings, incident_id: str, since: float) -> dict[str, str]:
    # The report stage writes <reports_dir>/<incident>.{md,html,json}; a failed run that
    # still reported is told apart from an old report by the file's time.
    paths: dict[str, str] = {}
    for kind, suffix in (("markdown", "md"), ("html", "html"), ("json", "json")):
        path = settings.reports_dir / f"{incident_id}.{suffix}"
        if path.exists() and path.stat().st_mtime >= since:
            paths[kind] = str(path)
    return paths


async def load_incident(settings: StanchSettings, incident_id: str) -> tuple[Incident, str | None]:
    """The stored incident document and the flow run id recorded for it.

    Raises:
        RerunRefused: no such incident, or its stored document no longer validates.
    """
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url

    from flows.models import Incident
    from flows.store import open_store

    async with open_store(settings.store_url) as store:
        row = await store.get_incident(incident_id)
    if row is None:
        where = make_url(settings.store_url).render_as_string(hide_password=True)
        raise RerunRefused(f"no incident {incident_id} in the store ({where})")
    try:
        return Incident.model_validate(row.document), row.flow_run_id
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise RerunRefused(
            f"the stored document of {incident_id} does not validate: {field}: {first['msg']}"
        ) from exc


async def rerun_incident(
    settings: StanchSettings,
    incident: Incident,
    recorded_run: str | None,
    *,
    force: bool,
    stale_after: float,
    analyst_delay: float | None,
    operator: str,
) -> RerunOutcome:
    """Supersede the incident's unfinished runs, then run ``handle-incident`` on it here.

    Raises:
        RerunRefused: an earlier run showed a sign of life within ``stale_after`` seconds
            and ``force`` is not set.
    """
    from prefect.client.orchestration import get_client

    from flows.store import open_store
    from flows.wiring import default_lab
    from stanch.demo import provision_lab, run_beside_analyst, simulated_analyst, summary
    from stanch.prefect_server import drain_prefect_clients

    async with open_store(settings.store_url) as store, get_client() as client:
        now = datetime.now(UTC)
        previous = await unfinished_runs(client, incident, recorded_run)
        live = alive(previous, now=now, stale_after=stale_after)
        if live and not force:
            names = "; ".join(
                f"{r.id} ({r.state}, last sign of life {r.silent_for(now):.0f}s ago)" for r in live
            )
            raise RerunRefused(
                f"{incident.id} may still be handled by a live flow run: {names}. A run counts "
                f"as gone after {stale_after:.0f}s without a heartbeat or state change; wait, "
                "or pass --force if you know its process is dead"
            )
        superseded = await supersede(
            client,
            previous,
            incident_id=incident.id,
            now=now,
            operator=operator,
            stale_after=stale_after,
        )
        expired = await expire_pending_approvals(store, incident.id)
        if settings.mode == "lab":
            provision_lab(default_lab(), settings, incident)
        stop = asyncio.Event()
        helper = (
            asyncio.create_task(
                simulated_analyst(
                    store, settings.approval_key(), incident.id, delay=analyst_delay, stop=stop
                )
            )
            if analyst_delay is not None
            else None
        )

        started = time.time()
        state = await run_beside_analyst(incident, helper, stop, flow_tags=(RERUN_TAG,))
    await drain_prefect_clients()
    result = await state.aresult(raise_on_failure=False)
    flow_run_id = str(state.state_details.flow_run_id)
    if isinstance(result, BaseException) or result is None:
        return RerunOutcome(
            incident_id=incident.id,
            flow_run_id=flow_run_id,
            state=state.name or str(state.type.value),
            superseded=superseded,
            expired_approvals=expired,
            summary=None,
            error=result if isinstance(result, BaseException) else None,
            report=await asyncio.to_thread(_reports_written, settings, incident.id, started),
        )
    return RerunOutcome(
        incident_id=incident.id,
        flow_run_id=flow_run_id,
        state=state.name or str(state.type.value),
        superseded=superseded,
        expired_approvals=expired,
        summary=summary(result, flow_run_id, elapsed=time.time() - started, ui_url=None),
        error=None,
        report=dict(result.report_paths),
    )


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _print(outcome: RerunOutcome, *, json_output: bool) -> None:
    if json_output:
        document = dict(outcome.summary or {"incident_id": outcome.incident_id})
        document.update(
            flow_run_id=outcome.flow_run_id,
            state=outcome.state,
            report=outcome.report,
            superseded=[asdict(s) for s in outcome.superseded],
            expired_approvals=outcome.expired_approvals,
            error=None if outcome.error is None else f"{outcome.error}",
        )
        print(json.dumps(document, indent=2))
        return
    for s in outcome.superseded:
        how = "forced" if s.forced else f"silent for {s.silent_seconds:.0f}s"
        out.print(f"superseded {s.id} ({s.name}): {s.state} → Crashed ({how})")
    for approval_id in outcome.expired_approvals:
        out.print(f"expired {approval_id}: its flow run is gone")
    out.print(f"{outcome.incident_id}: re-run in flow run {outcome.flow_run_id}: {outcome.state}")
    if outcome.report:
        out.print(f"Report: {', '.join(outcome.report.values())}")
    else:
        out.print("No report was written")


def rerun(
    incident: str,
    *,
    force: bool = False,
    stale_after: float | None = None,
    analyst_delay: float | None = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Run a stored incident through the lifecycle again, e.g. after its process died.

    Actions that already finished are replayed from the store, not sent to the vendor
    again. Earlier runs of the incident that Prefect still shows Running or Paused are
    marked Crashed first, so that the UI never shows two live runs; a run that showed a
    sign of life (a heartbeat, a state change of it or its tasks) within --stale-after
    seconds is taken to be alive, and the rerun is refused unless --force.

    Exit status: 0 the re-run completed; 1 it failed (the report may still have been
    written); 2 it was refused before starting.

    Args:
        incident: the incident id (INC-…).
        force: re-run even though an earlier run showed a sign of life recently.
        stale_after: seconds of silence after which a run counts as gone (default: three
            Prefect flow-run heartbeat intervals, PREFECT_FLOWS_HEARTBEAT_FREQUENCY).
        analyst_delay: let the simulated analyst approve after this many seconds (lab
            mode only).
        json_output: print the run's summary as one JSON object.
    """
    from flows.errors import ApprovalError
    from flows.settings import load_settings
    from stanch.prefect_server import ensure_server, use_server

    settings = load_settings()
    if analyst_delay is not None and settings.mode != "lab":
        err.print("--analyst-delay is for lab mode only")
        return 2
    if stale_after is not None and stale_after < 0:
        err.print("--stale-after must be 0 or more seconds")
        return 2
    try:
        # The store first: an unknown incident needs no Prefect server.
        document, recorded_run = asyncio.run(load_incident(settings, incident))
    except RerunRefused as exc:
        err.print(f"stanch rerun: {exc}")
        return 2
    server = ensure_server(settings.home)
    use_server(server, settings.home)
    try:
        outcome = asyncio.run(
            rerun_incident(
                settings,
                document,
                recorded_run,
                force=force,
                stale_after=default_stale_after() if stale_after is None else stale_after,
                analyst_delay=analyst_delay,
                operator=_operator(),
            )
        )
    except RerunRefused as exc:
        err.print(f"stanch rerun: {exc}")
        return 2
    except ApprovalError as exc:
        err.print(f"stanch rerun: the simulated analyst failed, the run was stopped: {exc}")
        return 1
    finally:
        server.stop()
    _print(outcome, json_output=json_output)
    if outcome.error is not None:
        err.print(f"The re-run of {incident} failed: {outcome.error}")
        return 1
    return 0


__all__ = [
    "PreviousRun",
    "RerunOutcome",
    "RerunRefused",
    "Superseded",
    "alive",
    "default_stale_after",
    "expire_pending_approvals",
    "load_incident",
    "rerun",
    "rerun_incident",
    "supersede",
    "unfinished_runs",
]
