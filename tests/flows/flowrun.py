"""Running handle-incident in a test: the flow in-process, an "analyst" answering it.

The analyst answers each approval request of the incident through the same path the CLI
uses (:func:`flows.approval.submit_decision`), or forges one through the Prefect API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.flow_runs import aresume_flow_run

from flows.approval import sign_decision, submit_decision, wait_until_paused
from flows.lifecycle import handle_incident
from flows.models import ActionPlan, Incident, IncidentOutcome
from flows.record import ApprovalRow, Store
from flows.settings import StanchSettings, load_settings
from flows.wiring import default_lab
from stanch.demo import provision_lab
from tests.flows import factories

Responder = Callable[[Store, StanchSettings, ApprovalRow], Awaitable[None]]

REPO = Path(__file__).resolve().parents[2]


async def approve(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
    await submit_decision(
        store,
        settings.approval_key(),
        row.id,
        approve=True,
        approver="alice",
        channel="cli",
        reason="confirmed",
    )


async def deny(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
    await submit_decision(
        store,
        settings.approval_key(),
        row.id,
        approve=False,
        approver="bob",
        channel="cli",
        reason="false positive",
    )


async def forge(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
    """Resume through the Prefect API with a well-formed decision signed by the wrong key."""
    assert row.flow_run_id is not None
    fields: dict[str, Any] = {
        "approval_id": row.id,
        "approved": list(row.plans["sha256s"]),
        "denied": [],
        "approver": "mallory",
        "channel": "prefect-ui",
        "reason": "looks fine",
        "decided_at": "2026-11-21T00:00:00Z",
    }
    fields["signature"] = sign_decision(b"not-the-key", fields)
    await wait_until_paused(UUID(row.flow_run_id))
    await aresume_flow_run(UUID(row.flow_run_id), run_input=fields)


async def run(
    incident: Incident, store: Store, responder: Responder | None
) -> tuple[IncidentOutcome | BaseException, list[str]]:
    """Run the flow; answer each approval request with ``responder``."""
    settings = load_settings()
    await store.save_incident(incident)
    provision_lab(default_lab(), settings, incident)
    answered: list[str] = []

    async def analyst() -> None:
        while True:
            for row in await store.approvals(incident_id=incident.id, status="pending"):
                if row.id not in answered and responder is not None:
                    answered.append(row.id)
                    await responder(store, settings, row)
            await asyncio.sleep(0.2)

    helper = asyncio.create_task(analyst())
    try:
        state = await handle_incident(incident, return_state=True)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)
    return await state.aresult(raise_on_failure=False), answered


def bundled_policy(name: str = "default.yaml") -> str:
    """The text of one of the repository's policy files."""
    return (REPO / "policies" / name).read_text()


def plan_for(incident: Incident) -> ActionPlan:
    """A host containment plan of ``incident`` (for claims made outside a flow)."""
    return factories.plan(tenant=incident.tenant, incident_id=incident.id)
