"""The summary's "Take it", "Add note" and "Close…" buttons through the service's signed
Slack route, against the loopback FakeSlack, with the refusals approvals have.

The summary is posted by the same function the flow uses; clicks and modal submissions
are signed as Slack signs them and POSTed with httpx to the route `stanch serve` mounts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from slack_sdk import WebClient

from flows.approval import ApprovalService, CaseClickService, interaction_router
from flows.detect import Intake
from flows.models import CaseStatus, Incident, IncidentOutcome, Investigation
from flows.policy import RulesFile
from flows.record import CaseBook, Ledger, Store, open_store, post_incident_summary
from integrations.slack import SlackChat, SlackRequestVerifier
from integrations.slack.case_messages import (
    CASE_CLOSE_ACTION_ID,
    CASE_CLOSE_CALLBACK_ID,
    CASE_NOTE_ACTION_ID,
    CASE_NOTE_CALLBACK_ID,
    CASE_TAKE_ACTION_ID,
)
from integrations.slack.fake import (
    TEAM_ID,
    FakeSlack,
    block_actions_payload,
    iter_text,
    signed_interaction,
    view_submission_payload,
)
from stanch.service import ServiceSettings, create_app
from stanch.slack_listener import INTERACTIONS_PATH, SlackInteractions
from tests.flows.factories import incident

SECRET = SecretStr("0a1b2c3d4e5f60718293a4b5c6d7e8f9")
CHANNEL = "C0SOC"
ALICE, MALLORY, GUEST = "U0ALICE", "U0MALLORY", "U0GUEST"
RULES = RulesFile.model_validate(
    {"version": 1, "approvers": {"slack_users": [ALICE, GUEST], "cli": False}}
)


@dataclass
class Slack:
    fake: FakeSlack
    client: httpx.AsyncClient
    listener: SlackInteractions
    store: Store
    incident: Incident
    ts: str
    base: int  # ledger entries before the test's clicks (the flow's own status changes)

    async def send(self, payload: dict[str, Any], *, secret: SecretStr = SECRET) -> int:
        headers, body = signed_interaction(secret, payload, int(time.time()))
        response = await self.client.post(INTERACTIONS_PATH, content=body, headers=headers)
        await self.listener.drain()
        return response.status_code

    def click(self, action_id: str, user: str, **overrides: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "approval_id": self.incident.id,
            "action_id": action_id,
            "user_id": user,
            "channel_id": CHANNEL,
            "message_ts": self.ts,
            "response_url": self.fake.response_url(),
        }
        return block_actions_payload(**(fields | overrides))

    def submit(self, callback_id: str, user: str, values: dict[str, Any]) -> dict[str, Any]:
        return view_submission_payload(
            approval_id=self.incident.id,
            reason="",
            user_id=user,
            callback_id=callback_id,
            values={
                block: {"value": value if isinstance(value, dict) else {"value": value}}
                for block, value in values.items()
            },
        )

    def summary(self) -> dict[str, Any]:
        return self.fake.messages[(CHANNEL, self.ts)]

    def buttons(self) -> list[str]:
        return [
            e["action_id"]
            for b in self.summary()["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
        ]

    def told(self) -> list[str]:
        return [str(r.get("text")) for r in self.fake.responses] + [
            str(e.get("text")) for e in self.fake.ephemerals
        ]


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as running:
        running.add_user(ALICE, "alice")
        running.add_user(MALLORY, "mallory")
        running.add_user(GUEST, "guest", is_restricted=True)
        yield running


@pytest.fixture
async def slack(fake: FakeSlack, tmp_path: Path) -> AsyncIterator[Slack]:
    """An incident awaiting closure whose summary is in Slack, and the service's route."""
    chat = SlackChat(
        WebClient(token=fake.token, base_url=fake.base_url, timeout=10),
        channel=CHANNEL,
        response_url_prefixes=(fake.origin + "/response/",),
    )
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as store:
        inc = incident(1)
        await store.save_incident(inc)
        await CaseBook(store).advance(inc.id, CaseStatus.AWAITING_CLOSURE, reason="reported")
        outcome = IncidentOutcome(
            incident=inc,
            flow_run_id=None,
            investigation=Investigation(),
            stages=[],
            actions=[],
            case_status="awaiting-closure",
        )
        ts = await post_incident_summary(outcome, store, chat)
        assert ts is not None
        approvals = ApprovalService(store, chat, b"k" * 32, team_id=TEAM_ID)
        cases = CaseClickService(store, chat, team_id=TEAM_ID, rules_for=lambda _t: RULES)
        listener = SlackInteractions(
            interaction_router(approvals.handle, cases),
            SlackRequestVerifier(SECRET),
            team_id=TEAM_ID,
        )
        app = create_app(
            ServiceSettings(), Intake(store, start_incident=_none), sources={}, slack=listener
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stanch.test"
        ) as client:
            base = (await Ledger(store).head()).seq
            yield Slack(fake, client, listener, store, inc, ts, base)


async def _none(_incident: Incident) -> None:
    return None


async def test_an_analyst_takes_notes_and_closes_from_the_summary(slack: Slack) -> None:
    """Given an incident's summary with the case buttons,
    When an analyst clicks Take it, adds a note and closes it as a true positive through
    the modals,
    Then the case is assigned to slack:<user>, noted and closed, each recorded as
    slack:<user> in the verified ledger, and the summary is redrawn in place: the case
    status and the assignee shown, only "Add note" left once closed."""
    assert slack.buttons() == [CASE_TAKE_ACTION_ID, CASE_NOTE_ACTION_ID, CASE_CLOSE_ACTION_ID]

    assert await slack.send(slack.click(CASE_TAKE_ACTION_ID, ALICE)) == 200
    case = await CaseBook(slack.store).get(slack.incident.id)
    assert case.assignee == f"slack:{ALICE}"
    shown = " ".join(t["text"] for _, t in iter_text(slack.summary()["blocks"]))
    assert f"<@{ALICE}>" in shown and "awaiting-closure" in shown

    assert await slack.send(slack.click(CASE_NOTE_ACTION_ID, ALICE)) == 200
    assert slack.fake.views[-1]["view"]["callback_id"] == CASE_NOTE_CALLBACK_ID
    note = slack.submit(CASE_NOTE_CALLBACK_ID, ALICE, {"note": "C2 confirmed <!channel>"})
    assert await slack.send(note) == 200

    assert await slack.send(slack.click(CASE_CLOSE_ACTION_ID, ALICE)) == 200
    assert slack.fake.views[-1]["view"]["callback_id"] == CASE_CLOSE_CALLBACK_ID
    closing = slack.submit(
        CASE_CLOSE_CALLBACK_ID,
        ALICE,
        {
            "disposition": {"type": "static_select", "selected_option": {"value": "true-positive"}},
            "summary": "Ransomware contained, user reset",
        },
    )
    assert await slack.send(closing) == 200

    case = await CaseBook(slack.store).get(slack.incident.id)
    assert (case.status, case.disposition, case.closed_by) == (
        "closed",
        "true-positive",
        f"slack:{ALICE}",
    )
    assert [n.text for n in case.notes] == ["C2 confirmed <!channel>"]
    entries = (await Ledger(slack.store).entries(slack.incident.id))[slack.base :]
    assert [(e.verb, e.approvers) for e in entries] == [
        ("assign", [f"slack:{ALICE}"]),
        ("note", [f"slack:{ALICE}"]),
        ("close", [f"slack:{ALICE}"]),
    ]
    assert (await Ledger(slack.store).verify()).ok
    assert slack.buttons() == [CASE_NOTE_ACTION_ID]
    assert all("<!channel>" not in t["text"] for _, t in iter_text(slack.summary()["blocks"]))


@pytest.mark.parametrize(
    ("who", "overrides", "told"),
    [
        (MALLORY, {}, "You may not work this incident: you are not an approver"),
        (GUEST, {}, "You may not work this incident: guest accounts may not approve"),
        ("U0NOBODY", {}, "You may not work this incident: unknown Slack user"),
        (ALICE, {"message_ts": "1700000000.999999"}, "not on the incident's summary"),
        (ALICE, {"approval_id": "INC-20990101-0001"}, "stanch does not know this incident"),
    ],
)
async def test_case_clicks_are_refused_like_approval_clicks(
    slack: Slack, who: str, overrides: dict[str, Any], told: str
) -> None:
    """Given the summary, When Take it and Close… are clicked by someone not among the
    tenant's analysts, a guest, an unknown user, on a copy of the button on another
    message, or for an unknown incident,
    Then the clicker alone is told why, no modal opens, and nothing is recorded."""
    for action in (CASE_TAKE_ACTION_ID, CASE_CLOSE_ACTION_ID):
        assert await slack.send(slack.click(action, who, **overrides)) == 200
    assert any(told in t for t in slack.told()), slack.told()
    assert slack.fake.views == []
    assert (await Ledger(slack.store).head()).seq == slack.base
    assert (await CaseBook(slack.store).get(slack.incident.id)).assignee is None


async def test_forged_and_foreign_requests_change_nothing(slack: Slack) -> None:
    """Given the summary, When a click is signed with the wrong secret, comes from another
    workspace, or a close modal is submitted by a non-analyst or without a disposition,
    Then 401 for the forgery, a silent drop for the other workspace, a refusal told to the
    submitter for the rest, and the case is untouched."""
    forged = await slack.send(slack.click(CASE_TAKE_ACTION_ID, ALICE), secret=SecretStr("f" * 32))
    assert forged == 401
    other_team = slack.click(CASE_TAKE_ACTION_ID, ALICE, team_id="T0ELSEWHERE")
    assert await slack.send(other_team) == 200
    for user, values, why in (
        (
            MALLORY,
            {
                "disposition": {
                    "type": "static_select",
                    "selected_option": {"value": "false-positive"},
                },
                "summary": "x",
            },
            "you are not an approver",
        ),
        (ALICE, {"summary": "no disposition"}, "disposition: is required"),
    ):
        assert await slack.send(slack.submit(CASE_CLOSE_CALLBACK_ID, user, values)) == 200
        assert any(why in t for t in slack.told()), slack.told()
    assert (await Ledger(slack.store).head()).seq == slack.base
    case = await CaseBook(slack.store).get(slack.incident.id)
    assert (case.status, case.assignee) == ("awaiting-closure", None)
