"""``stanch undo INCIDENT``: reverse what an incident's response still has in effect."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import socket
from typing import Any

from rich.console import Console

from stanch.cli_support import FAILED, OK, USAGE

err = Console(stderr=True, soft_wrap=True, highlight=False)

LAB_NOTICE = (
    "lab mode: this acts on fresh in-process simulators, not on the ones the incident's "
    "own run changed (they lived in that process); the store and ledger are real, the "
    "vendors are not"
)
"""What `stanch undo` and `stanch rerun` say in lab mode, before they start."""


def undo(incident: str, /, *, analyst_delay: float | None = None) -> int:
    """Build the inverse plans of what the incident still has in effect and run them.

    They go through the tenant's policy and the approval gate like any action: approve
    them with `stanch approve INCIDENT` from another terminal, or pass --analyst-delay
    (lab mode) to let the simulated analyst do it.

    In lab mode the vendors are fresh in-process simulators, so the undo acts on their
    state, not on the state the incident's own run left (which lived in that process).

    Exit status: 0 every inverse ran; 1 one did not, or the flow failed; 2 no such
    incident, or --analyst-delay outside lab mode.

    Args:
        incident: the incident id (INC-…).
        analyst_delay: let the simulated analyst approve after this many seconds.
    """
    from flows.runs import RerunRefused, load_incident
    from flows.settings import load_settings
    from stanch.prefect_server import ensure_server, use_server

    settings = load_settings()
    if analyst_delay is not None and settings.mode != "lab":
        err.print("[red]--analyst-delay is for lab mode only[/red]")
        return USAGE
    try:
        # The store first: an unknown incident is a usage error, and needs no server.
        asyncio.run(load_incident(settings, incident))
    except RerunRefused as exc:
        err.print(f"stanch undo: {exc}", markup=False)
        return USAGE
    if settings.mode == "lab":
        err.print(LAB_NOTICE, markup=False)
    server = ensure_server(settings.home)
    use_server(server, settings.home)
    try:
        results, error = asyncio.run(_undo(settings, incident, analyst_delay))
    finally:
        server.stop()
    if error is not None:
        err.print(f"[red]undo {incident} failed:[/red] {error}")
        return FAILED
    print(json.dumps(results, indent=2))
    return OK if all(r["status"] in ("executed", "already_done") for r in results) else FAILED


async def _undo(
    settings: Any, incident_id: str, analyst_delay: float | None
) -> tuple[list[dict[str, Any]], BaseException | None]:
    from flows.approval import submit_decision
    from flows.record import open_store
    from flows.respond import undo_incident
    from stanch.prefect_server import drain_prefect_clients

    async with open_store(settings.store_url) as store:

        async def analyst() -> None:
            answered: set[str] = set()
            while True:
                for row in await store.approvals(incident_id=incident_id, status="pending"):
                    if row.id not in answered:
                        answered.add(row.id)
                        await asyncio.sleep(analyst_delay or 0)
                        await submit_decision(
                            store,
                            settings.approval_key(),
                            row.id,
                            approve=True,
                            approver="sim-analyst",
                            channel="simulated-analyst",
                            reason="containment no longer needed",
                        )
                await asyncio.sleep(0.2)

        helper = asyncio.create_task(analyst()) if analyst_delay is not None else None
        try:
            state = await undo_incident(
                incident_id, requester=f"cli:{_operator()}", return_state=True
            )
        finally:
            if helper is not None:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        await drain_prefect_clients()
        result = await state.aresult(raise_on_failure=False)
    if isinstance(result, BaseException):
        return [], result
    return [
        {
            "action": a.plan.action,
            "target": a.plan.target_label,
            "status": a.status.value,
            "approved_by": a.approved_by,
            "plan_sha256": a.plan_sha256,
        }
        for a in result
    ], None


def _operator() -> str:
    """Who is at this terminal: the requester of the undo, who may not approve it."""
    return f"{getpass.getuser()}@{socket.gethostname()}"
