"""``stanch approve`` answers to the tenant's policy: its CLI operators, and no self-approval.

The flow runs in-process on the session's Prefect server; ``stanch approve`` runs as the
operator runs it, a subprocess sharing the store and the server, and is recorded as
``cli:<user>@<host>``.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flows.approval import submit_decision
from flows.lifecycle import handle_incident
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.record import Store, open_store
from flows.settings import load_settings
from flows.wiring import default_lab
from stanch.demo import provision_lab
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]
OPERATOR = f"{getpass.getuser()}@{socket.gethostname()}"


def _policy(tenant: str, cli_users: list[str]) -> str:
    users = ", ".join(f'"{u}"' for u in cli_users)
    return (
        f"version: 1\ntenant: {tenant}\napprovers:\n  cli: true\n  cli_users: [{users}]\n"
        "actions:\n  edr.contain_host: {approvals: 1}\n"
        # Remediation unattended: one request per incident, the containment's.
        "  edr.block_hash: {unattended_from: informational}\n"
        "  identity.expire_password: {unattended_from: informational}\n"
    )


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cli-other lets only someone else approve at the CLI; cli-mine lets this operator."""
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "cli-other.yaml").write_text(_policy("cli-other", ["nobody@elsewhere"]))
    (directory / "cli-mine.yaml").write_text(_policy("cli-mine", [OPERATOR]))
    (directory / "default.yaml").write_text(
        _policy("cli-other", ["nobody@elsewhere"]).replace("tenant: cli-other\n", "")
    )
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(directory))
    return directory


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


def _stanch_approve(approval_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stanch", "approve", approval_id, "--yes"],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _run(
    incident: Incident, store: Store, requester: str
) -> tuple[IncidentOutcome | BaseException, subprocess.CompletedProcess[str]]:
    """Run the flow; `stanch approve` its request; a colleague denies it if that failed."""
    settings = load_settings()
    await store.save_incident(incident)
    # A fresh lab each time: an earlier incident's expired password leaves the user in a
    # state Okta will not suspend from.
    default_lab().reset()
    provision_lab(default_lab(), settings, incident)
    answers: list[subprocess.CompletedProcess[str]] = []

    async def operator() -> None:
        while True:
            pending = await store.approvals(incident_id=incident.id, status="pending")
            if pending:
                answered = await asyncio.to_thread(_stanch_approve, pending[0].id)
                answers.append(answered)
                if answered.returncode != 0:
                    await submit_decision(
                        store,
                        settings.approval_key(),
                        pending[0].id,
                        approve=False,
                        approver="colleague",
                        channel="simulated-analyst",
                        reason="refused at the CLI",
                    )
                return
            await asyncio.sleep(0.2)

    helper = asyncio.create_task(operator())
    try:
        state = await handle_incident(incident, requester=requester, return_state=True)
    finally:
        await asyncio.gather(helper, return_exceptions=True)
    return await state.aresult(raise_on_failure=False), answers[0]


@pytest.mark.usefixtures("policies")
async def test_stanch_approve_enforces_the_tenants_cli_operators_and_the_requester(
    store: Store,
) -> None:
    """Given tenant cli-other, whose policy lets only nobody@elsewhere approve at the CLI,
    and tenant cli-mine, whose policy lets this operator,
    When this operator runs `stanch approve` on a cli-other request, on a cli-mine request
    they started themselves, and on a cli-mine request intake started,
    Then the first two are refused with the reason and nothing is contained, and the
    third is approved and recorded as cli:<operator>."""
    default_lab().reset()
    outcome, answer = await _run(
        factories.incident(9701, tenant="cli-other"), store, "automation:intake"
    )
    assert answer.returncode == 1
    said = " ".join(answer.stderr.split())  # the terminal wraps long lines
    assert "is not in approvers.cli_users of tenant cli-other's policy" in said
    assert isinstance(outcome, IncidentOutcome), outcome
    assert {a.status for a in outcome.actions if a.plan.stage == "contain"} == {ActionStatus.DENIED}

    outcome, answer = await _run(
        factories.incident(9702, tenant="cli-mine"), store, f"cli:{OPERATOR}"
    )
    assert answer.returncode == 1
    assert "you requested this action" in " ".join(answer.stderr.split())
    assert isinstance(outcome, IncidentOutcome), outcome
    assert all(
        a.status == ActionStatus.DENIED for a in outcome.actions if a.plan.stage == "contain"
    )

    outcome, answer = await _run(
        factories.incident(9703, tenant="cli-mine"), store, "automation:intake"
    )
    assert answer.returncode == 0, answer.stderr
    assert isinstance(outcome, IncidentOutcome), outcome
    contained = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contained and all(a.status == ActionStatus.EXECUTED for a in contained)
    assert all(a.approved_by == [f"cli:{OPERATOR}"] for a in contained)
