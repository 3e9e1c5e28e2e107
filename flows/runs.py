"""An incident's Prefect flow runs: which are still alive, and superseding those that are not.

A run counts as gone after a few heartbeat intervals without a sign of life (a heartbeat,
a state change of it or of its tasks); ``stanch rerun`` marks such runs Crashed before it
runs the incident again, and expires the approvals they were waiting on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

    from flows.models import Incident
    from flows.record import Store
    from flows.settings import StanchSettings


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
    from flows.record import Ledger

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


async def load_incident(settings: StanchSettings, incident_id: str) -> tuple[Incident, str | None]:
    """The stored incident document and the flow run id recorded for it.

    Raises:
        RerunRefused: no such incident, or its stored document no longer validates.
    """
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url

    from flows.models import Incident
    from flows.record import open_store

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
