"""``stanch rerun INCIDENT``: run a stored incident through ``handle-incident`` again.

Safe because every action is claimed in the store under its idempotency key (incident,
action, target): finished actions are replayed, only unfinished ones reach the vendor.
Earlier runs of the incident that Prefect still shows live are first marked Crashed
(:mod:`flows.runs` decides which are).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from cyclopts import Parameter
from rich.console import Console

from flows.models import Incident
from flows.runs import (
    RERUN_TAG,
    RerunRefused,
    Superseded,
    alive,
    default_stale_after,
    expire_pending_approvals,
    load_incident,
    supersede,
    unfinished_runs,
)
from flows.settings import StanchSettings

# No markup: run names carry incident titles, which come from attacker-controlled alerts.
out = Console(soft_wrap=True, highlight=False, markup=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)


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
        path = settings.reports / f"{incident_id}.{suffix}"
        if path.exists() and path.stat().st_mtime >= since:
            paths[kind] = str(path)
    return paths


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

    from flows.record import open_store
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
        state = await run_beside_analyst(
            incident, helper, stop, flow_tags=(RERUN_TAG,), requester=f"cli:{operator}"
        )
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
    /,
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

    In lab mode the vendors are fresh in-process simulators: the re-run acts on their
    state, not on what the incident's earlier run changed (that lived in its process).

    Exit status: 0 the re-run completed; 1 it failed (the report may still have been
    written); 2 it was refused before starting (an unknown incident id included).

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
    if settings.mode == "lab":
        from stanch.undo_cli import LAB_NOTICE

        err.print(LAB_NOTICE)
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
