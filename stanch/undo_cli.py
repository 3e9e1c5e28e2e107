"""``stanch undo INCIDENT``: reverse what an incident's response still has in effect."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import socket
from typing import Any

from rich.console import Console

err = Console(stderr=True)


def undo(incident: str, *, analyst_delay: float | None = None) -> int:
    """Build the inverse plans of what the incident still has in effect and run them.

    They go through the tenant's policy and the approval gate like any action: approve
    them with `stanch approve INCIDENT` from another terminal, or pass --analyst-delay
    (lab mode) to let the simulated analyst do it.

    Args:
        incident: the incident id (INC-…).
        analyst_delay: let the simulated analyst approve after this many seconds.
    """
    from flows.settings import load_settings
    from stanch.prefect_server import ensure_server, use_server

    settings = load_settings()
    if analyst_delay is not None and settings.mode != "lab":
        err.print("[red]--analyst-delay is for lab mode only[/red]")
        return 2
    server = ensure_server(settings.home)
    use_server(server, settings.home)
    try:
        results, error = asyncio.run(_undo(settings, incident, analyst_delay))
    finally:
        server.stop()
    if error is not None:
        err.print(f"[red]undo {incident} failed:[/red] {error}")
        return 1
    print(json.dumps(results, indent=2))
    return 0 if all(r["status"] in ("executed", "already_done") for r in results) else 1


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
