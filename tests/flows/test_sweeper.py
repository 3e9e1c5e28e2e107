"""The sweep flow: TTL expiry and the Slack approval sweep in one pass.

Runs the flow in-process on the session's Prefect server, with a store of the test's own,
the FortiGate lab simulator (its clock held still, so only the sweep decides when a block
ends) and the loopback FakeSlack.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient

from flows.approval import (
    ApprovalRequest,
    new_approval_request,
    pending_row,
    post_and_bind,
    slack_approval_service,
)
from flows.errors import ConfigurationError
from flows.models import ActionPlan, ActionStatus, Stage, Verdict, utcnow
from flows.record import Ledger, Store, open_store
from flows.settings import load_settings
from flows.sweep import SweepSummary, SweptApproval, sweep
from flows.tasks import execute_action
from flows.wiring import connect, default_lab
from integrations.capabilities import Capability
from integrations.fortigate.sim import FortiGateSimulator
from integrations.slack import SlackChat
from integrations.slack.fake import TEAM_ID, FakeSlack
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")

CHANNEL = "C0APPROVALS"
_numbers = itertools.count(8000)


@pytest.fixture
def firewall() -> Iterator[FortiGateSimulator]:
    """The lab FortiGate, its clock stopped: bans last until unbanned."""
    lab = default_lab()
    lab.reset()
    stopped = time.time()
    lab.simulators["fortigate"] = sim = FortiGateSimulator(clock=lambda: stopped)
    yield sim
    lab.reset()


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    """A store of this test's own, which the flow opens too."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}"
    monkeypatch.setenv("STANCH_DATABASE_URL", url)
    async with open_store(url) as opened:
        yield opened


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """FakeSlack, and settings that send approvals to it."""
    with FakeSlack() as fake:
        monkeypatch.setenv("STANCH_APPROVAL_CHANNEL", "slack")
        monkeypatch.setenv("STANCH_SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("STANCH_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("STANCH_SLACK_TEAM_ID", TEAM_ID)
        monkeypatch.setenv("STANCH_SLACK_BASE_URL", fake.base_url)
        yield fake


async def block(store: Store, ip: str, ttl: int) -> str:
    """An incident whose block of ``ip`` for ``ttl`` seconds ran; returns its id."""
    incident = factories.incident(next(_numbers))
    await store.save_incident(incident)
    plan = ActionPlan(
        tenant=incident.tenant,
        incident_id=incident.id,
        capability=Capability.FIREWALL,
        verb="block_ip",
        target=ip,
        target_label=ip,
        parameters={"ttl_seconds": ttl, "reason": f"stanch {incident.id}"},
        stage=Stage.CONTAIN,
    )
    async with connect(load_settings(), tenant=incident.tenant) as integrations:
        result = await execute_action.fn(
            plan,
            plan.sha256,
            integrations.firewall,
            store,
            verdict=Verdict.APPROVAL,
            approved_by=["cli:alice"],
        )
    assert result.status == ActionStatus.EXECUTED
    return incident.id


async def posted_approval(store: Store, fake: FakeSlack, *, overdue: bool) -> ApprovalRequest:
    """A pending approval posted to Slack, its deadline passed or an hour away."""
    request = new_approval_request(
        incident_id=f"INC-20261121-{next(_numbers):04d}",
        tenant="demo",
        flow_run_id=None,
        plans=[factories.plan()],
        reasons={},
        timeout_seconds=3600,
        incident_title="ransomware on WS-0042",
    )
    if overdue:
        request = request.model_copy(update={"deadline": utcnow() - timedelta(seconds=1)})
    await store.create_approval(pending_row(request))
    chat = SlackChat(WebClient(token=fake.token, base_url=fake.base_url), channel=CHANNEL)
    await post_and_bind(chat, store, request, {"user_ids": ["UALICE"], "group": None})
    return request


async def test_a_pass_lifts_the_expired_block_and_leaves_the_others(
    store: Store, firewall: FortiGateSimulator
) -> None:
    """Given a 1 s block and a 1 h block of two addresses, approvals on the CLI,
    When the sweep flow runs after the first second,
    Then it reports the one expiry, executed, and only that address is unbanned."""
    short = await block(store, "203.0.113.9", 1)
    long = await block(store, "198.51.100.7", 3600)
    await asyncio.sleep(1.1)

    summary = await sweep()

    assert isinstance(summary, SweepSummary)
    assert [(e.incident_id, e.target, e.status) for e in summary.expired] == [
        (short, "203.0.113.9", ActionStatus.EXECUTED)
    ]
    assert summary.approvals == []
    assert set(firewall.table()) == {"198.51.100.7"}
    assert await Ledger(store).in_effect(short) == []
    assert [e.entry.verb for e in await Ledger(store).in_effect(long)] == ["block_ip"]


async def test_with_slack_approvals_a_pass_also_expires_overdue_requests(
    store: Store, firewall: FortiGateSimulator, slack: FakeSlack
) -> None:
    """Given approvals through Slack, one request past its deadline and one an hour
    from it, When the sweep flow runs, Then it expires the overdue one (its run is gone, so
    the store records the expiry) and marks its message; the other is left pending."""
    overdue = await posted_approval(store, slack, overdue=True)
    waiting = await posted_approval(store, slack, overdue=False)

    summary = await sweep()

    assert summary.approvals == [
        SweptApproval(approval_id=overdue.id, done="expired (run not resumable)")
    ]
    assert summary.expired == []
    expired = await store.get_approval(overdue.id)
    pending = await store.get_approval(waiting.id)
    assert expired is not None and expired.status == "expired"
    assert pending is not None and pending.status == "pending"
    assert len(slack.calls_to("chat.update")) == 1


async def test_the_approval_sweep_can_be_left_to_the_service(
    store: Store, firewall: FortiGateSimulator, slack: FakeSlack
) -> None:
    """Given an overdue Slack approval and an expired block,
    When the sweep flow runs with approvals=False (as stanch serve runs it),
    Then only the block is undone and Slack is not called."""
    overdue = await posted_approval(store, slack, overdue=True)
    await block(store, "203.0.113.9", 1)
    await asyncio.sleep(1.1)
    calls = len(slack.calls)

    summary = await sweep(approvals=False)

    assert summary.approvals == []
    assert [e.status for e in summary.expired] == [ActionStatus.EXECUTED]
    assert len(slack.calls) == calls
    row = await store.get_approval(overdue.id)
    assert row is not None and row.status == "pending"


async def test_slack_approvals_without_a_workspace_fail_the_pass_by_name(
    store: Store, monkeypatch: pytest.MonkeyPatch, slack: FakeSlack
) -> None:
    """Given approvals through Slack but no team id,
    When the service is built or the flow runs,
    Then it is refused naming STANCH_SLACK_TEAM_ID, and the flow run ends Failed."""
    monkeypatch.delenv("STANCH_SLACK_TEAM_ID")
    with pytest.raises(ConfigurationError, match=r"need STANCH_SLACK_TEAM_ID$"):
        slack_approval_service(store, load_settings())

    state = await sweep(return_state=True)

    assert state.is_failed()
    with pytest.raises(ConfigurationError, match="STANCH_SLACK_TEAM_ID"):
        await state.aresult()
    assert slack.calls == []
