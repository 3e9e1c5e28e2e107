"""Who may approve in Slack, through the real route: ``POST /slack/interactions``.

The real handle-incident flow posts its request to the loopback fake Slack; clicks arrive
as signed ``block_actions`` requests at the stanch service's Slack route, which hands them
to the approval service built by ``slack_approval_service`` from the settings.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from flows.approval import slack_approval_service
from flows.detect import Intake
from flows.lifecycle import handle_incident
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.record import Store, open_store
from flows.settings import load_settings
from flows.wiring import default_lab
from integrations.slack import APPROVE_ACTION_ID, SlackRequestVerifier
from integrations.slack.fake import TEAM_ID, FakeSlack, block_actions_payload, signed_interaction
from stanch.demo import provision_lab
from stanch.service import ServiceSettings, create_app
from stanch.slack_listener import INTERACTIONS_PATH, SlackInteractions
from tests.flows import factories
from tests.flows.flowrun import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")

GLOBAL_CHANNEL = "C0PROVIDER"
GROUP = "S0SOCANALYSTS"  # the default policy's approver group
SECRET = SecretStr(secrets.token_hex(16))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        for name, value in {
            "STANCH_APPROVAL_CHANNEL": "slack",
            "STANCH_SLACK_BOT_TOKEN": slack.token,
            "STANCH_SLACK_BASE_URL": slack.base_url,
            "STANCH_SLACK_CHANNEL": GLOBAL_CHANNEL,
            "STANCH_SLACK_TEAM_ID": TEAM_ID,
        }.items():
            monkeypatch.setenv(name, value)
        yield slack


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


async def _click(route: httpx.AsyncClient, fake: FakeSlack, approval_id: str, user: str) -> None:
    [(channel, ts)] = [
        key
        for key, message in fake.messages.items()
        if any(
            e.get("value") == approval_id
            for b in message.get("blocks", [])
            if b.get("type") == "actions"
            for e in b.get("elements", [])
        )
    ]
    payload = block_actions_payload(
        approval_id=approval_id,
        action_id=APPROVE_ACTION_ID,
        user_id=user,
        channel_id=channel,
        message_ts=ts,
    )
    payload.pop("response_url", None)
    headers, body = signed_interaction(SECRET, payload, int(time.time()))
    response = await route.post(INTERACTIONS_PATH, content=body, headers=headers)
    assert response.status_code == 200


async def _run_with_clicks(
    incident: Incident, store: Store, fake: FakeSlack, clickers: list[str], requester: str
) -> tuple[IncidentOutcome | BaseException, list[str], list[str]]:
    """Run the flow; each clicker in turn clicks Approve on its request, via the route.

    Returns the outcome, what the service made of each click, and the channel the
    request was posted in.
    """
    settings = load_settings()
    await store.save_incident(incident)
    provision_lab(default_lab(), settings, incident)
    service = slack_approval_service(store, settings)
    listener = SlackInteractions(service.handle, SlackRequestVerifier(SECRET), team_id=TEAM_ID)
    app = create_app(
        ServiceSettings(), Intake(store, start_incident=_no_start), sources={}, slack=listener
    )
    outcomes: list[str] = []
    channels: list[str] = []

    async def analysts() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stanch.local"
        ) as route:
            while True:
                pending = await store.approvals(incident_id=incident.id, status="pending")
                binding = await store.slack_approval(pending[0].id) if pending else None
                if binding is not None:
                    channels.append(binding.channel)
                    for user in clickers:
                        await _click(route, fake, pending[0].id, user)
                        await listener.drain()
                        outcomes.append(listener.handled[-1].outcome)
                    return
                await asyncio.sleep(0.1)

    helper = asyncio.create_task(analysts())
    try:
        state = await handle_incident(incident, requester=requester, return_state=True)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)
    return await state.aresult(raise_on_failure=False), outcomes, channels


async def _no_start(incident: Incident) -> None:
    return None


async def test_neither_the_requester_nor_the_incidents_subject_may_approve_in_slack(
    fake: FakeSlack, store: Store
) -> None:
    """Given a run requested by Slack user UREQ, an incident about jdoe@acme.example,
    and UREQ, UJDOE (whose Slack email is jdoe@acme.example) and UALICE all in the
    approver group,
    When UREQ, then UJDOE, then UALICE click Approve through the Slack route,
    Then the first two are refused, and Alice's approval is the one that contains."""
    fake.add_user("UREQ")
    fake.add_user("UJDOE", "jdoe", email="jdoe@acme.example")
    fake.add_user("UALICE", "alice", email="alice@soc.example")
    fake.add_usergroup(GROUP, ["UREQ", "UJDOE", "UALICE"])
    default_lab().reset()
    incident = factories.incident(9601)
    outcome, outcomes, _ = await _run_with_clicks(
        incident, store, fake, ["UREQ", "UJDOE", "UALICE"], requester="slack:UREQ"
    )
    assert isinstance(outcome, IncidentOutcome), outcome
    assert outcomes == ["refused", "refused", "final"]
    contained = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contained and all(a.status == ActionStatus.EXECUTED for a in contained)
    assert all(a.approved_by == ["slack:UALICE"] for a in contained)
    told = {m["user"]: m["text"] for m in fake.ephemerals}
    assert "you requested this action" in told["UREQ"]
    assert "you are a subject of this incident" in told["UJDOE"]


@pytest.fixture
def two_tenants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenants a and b, each with its own channel and approvers; policies name no one."""
    policies = tmp_path / "policies"
    policies.mkdir()
    default = (REPO / "policies" / "default.yaml").read_text()
    rule = "  slack_group: S0SOCANALYSTS       # members of this Slack user group may approve\n"
    assert rule in default
    (policies / "default.yaml").write_text(default.replace(rule, ""))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))
    monkeypatch.setenv(
        "STANCH_TENANTS",
        json.dumps(
            {
                "tenant-a": {"slack_channel": "C0TENANTA", "slack_approver_ids": ["UAPPROVERA"]},
                "tenant-b": {"slack_channel": "C0TENANTB", "slack_approver_ids": ["UAPPROVERB"]},
            }
        ),
    )


@pytest.mark.usefixtures("two_tenants")
async def test_an_approver_of_one_tenant_cannot_approve_anothers_request(
    fake: FakeSlack, store: Store
) -> None:
    """Given tenants a and b with their own Slack channels and approvers,
    When tenant b's request is posted and a's approver clicks Approve, then b's,
    Then the request was posted in b's channel, a's click is refused, and b's approves."""
    fake.add_user("UAPPROVERA")
    fake.add_user("UAPPROVERB")
    default_lab().reset()
    incident = factories.incident(9602, tenant="tenant-b")
    outcome, outcomes, channels = await _run_with_clicks(
        incident, store, fake, ["UAPPROVERA", "UAPPROVERB"], requester="automation:intake"
    )
    assert isinstance(outcome, IncidentOutcome), outcome
    assert channels == ["C0TENANTB"]
    assert outcomes == ["refused", "final"]
    contained = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contained and all(a.approved_by == ["slack:UAPPROVERB"] for a in contained)
