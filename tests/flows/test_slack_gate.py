"""Slack approvals end to end: the flow posts, pauses; a click (or expiry) resumes it.

The real handle-incident flow on the session's Prefect server, the lab simulators, the
loopback FakeSlack, and the approval service with the real ``submit_decision``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from slack_sdk import WebClient

from flows.approval import ApprovalService, Handled, run_sweeper, submit_decision
from flows.lifecycle import handle_incident
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.record import ApprovalRow, Store, open_store
from flows.settings import load_settings
from flows.wiring import default_lab
from integrations.slack import (
    APPROVE_ACTION_ID,
    APPROVE_SELECTED_ACTION_ID,
    DENY_STOP_ACTION_ID,
    SlackChat,
    parse_click,
    parse_deny_reason,
)
from integrations.slack.fake import (
    TEAM_ID,
    FakeSlack,
    block_actions_payload,
    selection_state,
    view_submission_payload,
)
from stanch.demo import provision_lab
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")

CHANNEL = "C0SOCAPPROVALS"
POLICY_GROUP = "S0SOCANALYSTS"  # the default policy's approver group
_numbers = iter(range(7000, 8000))

Analyst = Callable[[ApprovalService, ApprovalRow], Awaitable[Handled | None]]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        slack.add_user("UALICE")
        slack.add_usergroup(POLICY_GROUP, ["UALICE"])
        for name, value in {
            "STANCH_APPROVAL_CHANNEL": "slack",
            "STANCH_SLACK_BOT_TOKEN": slack.token,
            "STANCH_SLACK_BASE_URL": slack.base_url,
            "STANCH_SLACK_CHANNEL": CHANNEL,
            "STANCH_SLACK_TEAM_ID": TEAM_ID,
        }.items():
            monkeypatch.setenv(name, value)
        yield slack


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


@pytest.fixture
def service(fake: FakeSlack, store: Store) -> ApprovalService:
    client = WebClient(token=fake.token, base_url=fake.base_url, timeout=5)
    chat = SlackChat(client, channel=CHANNEL, response_url_prefixes=(fake.origin + "/response/",))
    return ApprovalService(
        store, chat, load_settings().approval_key(), team_id=TEAM_ID, submit=submit_decision
    )


@pytest.fixture(autouse=True)
def fresh_lab() -> None:
    default_lab().reset()


async def click_approve(service: ApprovalService, row: ApprovalRow) -> Handled | None:
    binding = await service.store.slack_approval(row.id)
    assert binding is not None, "the gate stores the message binding before pausing"
    payload = block_actions_payload(
        approval_id=row.id,
        action_id=APPROVE_ACTION_ID,
        user_id="UALICE",
        channel_id=binding.channel,
        message_ts=binding.ts,
    )
    return await service.handle(parse_click(payload, team_id=TEAM_ID))


async def run(
    incident: Incident, service: ApprovalService, analyst: Analyst | None
) -> tuple[IncidentOutcome | BaseException, list[Handled | None]]:
    settings = load_settings()
    await service.store.save_incident(incident)
    provision_lab(default_lab(), settings, incident)
    handled: list[Handled | None] = []
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            for row in await service.store.approvals(incident_id=incident.id, status="pending"):
                if row.id not in seen and analyst is not None:
                    if await service.store.slack_approval(row.id) is None:
                        continue
                    seen.add(row.id)
                    handled.append(await analyst(service, row))
            await asyncio.sleep(0.1)

    helper = asyncio.create_task(watch())
    try:
        state = await handle_incident(incident, return_state=True)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)
    return await state.aresult(raise_on_failure=False), handled


def message_of(fake: FakeSlack, channel: str, ts: str) -> dict[str, Any]:
    return fake.messages[(channel, ts)]


async def test_a_slack_click_resumes_the_flow_and_the_approved_actions_run(
    fake: FakeSlack, service: ApprovalService
) -> None:
    """Given approval_channel=slack and Alice in the policy's approver group,
    When the flow asks for approval and Alice clicks Approve on the posted message,
    Then the message was posted before the pause with its binding stored, the flow
    resumes, every containment action runs approved by slack:UALICE, the message
    shows the decision without buttons, and the summary is posted in its thread."""
    incident = factories.incident(next(_numbers))
    outcome, handled = await run(incident, service, click_approve)

    assert isinstance(outcome, IncidentOutcome), outcome
    assert handled and all(h is not None and h.outcome == "final" for h in handled)
    contained = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contained and all(a.status == ActionStatus.EXECUTED for a in contained)
    assert all(a.approved_by == ["slack:UALICE"] for a in contained)
    [row] = await service.store.approvals(incident_id=incident.id)
    assert (row.status, row.decided_by) == ("approved", "slack:UALICE")
    binding = await service.store.slack_approval(row.id)
    assert binding is not None and binding.channel == CHANNEL
    posted = [m for m in fake.history if m["method"] == "chat.postMessage"]
    roots = [m for m in posted if not m.get("thread_ts")]
    assert [m["ts"] for m in roots] == [binding.ts]
    assert any(b["type"] == "actions" for b in roots[0]["blocks"])
    # The incident's summary closes its thread: the approval message's.
    [summary] = [m for m in posted if m.get("thread_ts") == binding.ts]
    assert incident.id in summary["text"]
    final = message_of(fake, binding.channel, binding.ts)
    assert not any(b["type"] == "actions" for b in final["blocks"])
    assert "*Approved* by <@UALICE>" in final["blocks"][-1]["text"]["text"]


async def test_expiry_by_the_sweeper_resumes_the_flow_into_the_no_action_branch(
    fake: FakeSlack, service: ApprovalService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a 5-second approval deadline and nobody clicking,
    When the service's sweeper passes the deadline,
    Then the flow is resumed with a signed expiry (not Prefect's timeout), no containment
    reaches the EDR, the approval is recorded as expired and the message says Expired."""
    monkeypatch.setenv("STANCH_APPROVAL_TIMEOUT_SECONDS", "5")
    stop = asyncio.Event()
    sweeper = asyncio.create_task(run_sweeper(service, every=0.5, stop=stop))
    try:
        outcome, _ = await run(factories.incident(next(_numbers)), service, None)
    finally:
        stop.set()
        await sweeper
    assert isinstance(outcome, IncidentOutcome), outcome
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contain and all(a.status == ActionStatus.DENIED for a in contain)
    assert all((a.error or "").startswith("expired") for a in contain)
    edr = default_lab().simulator("crowdstrike")
    assert not [r for r in edr.requests if "devices-actions" in r.path]
    [row] = await service.store.approvals(incident_id=outcome.incident.id)
    assert (row.status, row.decided_by) == ("expired", "stanch:timeout")
    binding = await service.store.slack_approval(row.id)
    assert binding is not None and binding.final == "expired"
    final = message_of(fake, binding.channel, binding.ts)
    assert "*Expired*" in final["blocks"][-1]["text"]["text"]


async def test_a_cli_decision_on_a_slack_request_still_removes_the_buttons(
    fake: FakeSlack, service: ApprovalService
) -> None:
    """Given a request posted to Slack,
    When it is approved from the CLI instead,
    Then the flow acts on it and the gate updates the Slack message so nobody clicks a
    stale button."""

    async def cli(service: ApprovalService, row: ApprovalRow) -> None:
        await submit_decision(
            service.store,
            load_settings().approval_key(),
            row.id,
            approve=True,
            approver="alice",
            channel="cli",
            reason="ok",
        )

    outcome, _ = await run(factories.incident(next(_numbers)), service, cli)
    assert isinstance(outcome, IncidentOutcome), outcome
    [row] = await service.store.approvals(incident_id=outcome.incident.id)
    assert row.decided_by == "cli:alice"
    binding = await service.store.slack_approval(row.id)
    assert binding is not None
    final = message_of(fake, binding.channel, binding.ts)
    assert not any(b["type"] == "actions" for b in final["blocks"])
    assert "*Approved*" in final["blocks"][-1]["text"]["text"]


async def test_deny_as_false_positive_stops_the_response_and_marks_the_incident(
    fake: FakeSlack, service: ApprovalService
) -> None:
    """Given the demo incident and Alice in the approver group,
    When she clicks "Deny (false positive — stop)" and says why in the modal,
    Then no containment reaches a vendor, remediation does not run at all (the password
    is not expired, though policy runs that unattended), the report stage still runs,
    the incident is marked for closure as a false positive with her words, and the
    Slack message says the response was stopped."""
    reason = "user is travelling, confirmed by phone"

    async def deny_stop(service: ApprovalService, row: ApprovalRow) -> Handled | None:
        binding = await service.store.slack_approval(row.id)
        assert binding is not None
        payload = block_actions_payload(
            approval_id=row.id,
            action_id=DENY_STOP_ACTION_ID,
            user_id="UALICE",
            channel_id=binding.channel,
            message_ts=binding.ts,
        )
        opened = await service.handle(parse_click(payload, team_id=TEAM_ID))
        assert opened.outcome == "modal"
        submitted = view_submission_payload(
            approval_id=row.id,
            reason=reason,
            user_id="UALICE",
            callback_id="stanch_deny_stop_reason",
        )
        return await service.handle(parse_deny_reason(submitted, team_id=TEAM_ID))

    incident = factories.incident(next(_numbers))
    outcome, handled = await run(incident, service, deny_stop)

    assert isinstance(outcome, IncidentOutcome), outcome
    assert handled and handled[0] is not None and handled[0].outcome == "final"
    stages = {s.stage.value: s for s in outcome.stages}
    assert stages["remediate"].state == "skipped"
    assert "stopped" in stages["remediate"].note
    assert stages["report"].state == "completed"
    assert not [a for a in outcome.actions if a.plan.stage == "remediate"]
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contain and all(a.status == ActionStatus.DENIED for a in contain)
    assert all("false positive by slack:UALICE" in (a.error or "") for a in contain)
    okta = default_lab().simulator("okta")
    assert not [r for r in okta.requests if "expire_password" in r.path]
    edr = default_lab().simulator("crowdstrike")
    assert not [r for r in edr.requests if "devices-actions" in r.path]
    row = await service.store.get_incident(incident.id)
    assert row is not None
    assert row.proposed_disposition == "false_positive"
    assert (row.proposed_disposition_by, row.proposed_disposition_reason) == (
        "slack:UALICE",
        reason,
    )
    [approval] = await service.store.approvals(incident_id=incident.id)
    binding = await service.store.slack_approval(approval.id)
    assert binding is not None
    assert (
        "response stopped"
        in message_of(fake, binding.channel, binding.ts)["blocks"][-1]["text"]["text"]
    )


async def test_approve_selected_runs_only_the_ticked_containment(
    fake: FakeSlack, service: ApprovalService
) -> None:
    """Given the demo incident's containment request (several plans, one approver),
    When Alice ticks only the host isolation and clicks Approve selected,
    Then only that plan runs, the others are recorded as denied by her, the request is
    recorded as partial, and the rest of the response goes on (remediation runs)."""

    async def isolate_only(service: ApprovalService, row: ApprovalRow) -> Handled | None:
        binding = await service.store.slack_approval(row.id)
        assert binding is not None
        plans = row.plans["plans"]
        isolate = [
            p
            for p, h in zip(plans, row.plans["sha256s"], strict=True)
            if p["verb"] == "contain_host"
        ]
        assert isolate and len(plans) > 1
        hashes = [
            h
            for p, h in zip(plans, row.plans["sha256s"], strict=True)
            if p["verb"] == "contain_host"
        ]
        payload = block_actions_payload(
            approval_id=row.id,
            action_id=APPROVE_SELECTED_ACTION_ID,
            user_id="UALICE",
            channel_id=binding.channel,
            message_ts=binding.ts,
            state=selection_state(row.id, hashes),
        )
        return await service.handle(parse_click(payload, team_id=TEAM_ID))

    outcome, handled = await run(factories.incident(next(_numbers)), service, isolate_only)

    assert isinstance(outcome, IncidentOutcome), outcome
    assert handled and handled[0] is not None and handled[0].status == "partial"
    contain = {a.plan.verb: a for a in outcome.actions if a.plan.stage == "contain"}
    assert contain["contain_host"].status == ActionStatus.EXECUTED
    assert contain["contain_host"].approved_by == ["slack:UALICE"]
    refused = [a for verb, a in contain.items() if verb != "contain_host"]
    assert refused and all(a.status == ActionStatus.DENIED for a in refused)
    assert all((a.error or "").startswith("denied by slack:UALICE") for a in refused)
    [row] = await service.store.approvals(incident_id=outcome.incident.id)
    assert row.status == "partial"
    assert {s.stage.value: s.state for s in outcome.stages}["remediate"] == "completed"
