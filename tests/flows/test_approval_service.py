"""The Slack approval service's core: clicks against the rules, and the sweeper.

Real store (SQLite in a temp dir), real ``slack_sdk`` calls against the loopback FakeSlack,
real interaction parsing; only the resume is replaced by a recorder, so these tests need no
Prefect server (the resume itself is covered in ``test_slack_gate.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from flows.approval import (
    ApprovalRequest,
    ApprovalService,
    new_approval_request,
    pending_row,
    post_and_bind,
)
from flows.errors import ApprovalError
from flows.models import utcnow
from flows.record import Store, open_store
from integrations.slack import (
    APPROVE_ACTION_ID,
    APPROVE_SELECTED_ACTION_ID,
    DENY_ACTION_ID,
    DENY_STOP_ACTION_ID,
    Click,
    DenyReason,
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
from tests.flows.factories import plan

CHANNEL = "C0APPROVALS"
GROUP = "S0APPROVERS"
ESCALATION = "S0MANAGERS"
KEY = b"s" * 32
_numbers = itertools.count(1)


@dataclass
class Recorder:
    """Stands in for ``submit_decision``: records what would be signed and resumed."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    fail_with: Exception | None = None

    async def __call__(
        self,
        store: Store,
        key: bytes,
        approval_id: str,
        *,
        approve: bool,
        approver: str,
        channel: str,
        reason: str,
        approved: Sequence[str] | None = None,
        stop_response: bool = False,
    ) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        call: dict[str, Any] = {
            "approval_id": approval_id,
            "approve": approve,
            "approver": approver,
            "channel": channel,
            "reason": reason,
        }
        # Named only when used, so the all-or-nothing expectations read as before.
        if approved is not None:
            call["approved"] = list(approved)
        if stop_response:
            call["stop_response"] = True
        self.calls.append(call)


@dataclass
class World:
    fake: FakeSlack
    store: Store
    chat: SlackChat
    service: ApprovalService
    submitted: Recorder
    clock: list[datetime]

    async def request(
        self,
        *,
        required: int = 1,
        requester: str = "stanch:handle-incident",
        seconds: int = 600,
        approver_ids: tuple[str, ...] = (),
        group: str | None = GROUP,
        plans: int = 1,
    ) -> ApprovalRequest:
        """A pending approval, stored and posted to the fake like the gate does."""
        request = new_approval_request(
            incident_id=f"INC-20261121-{next(_numbers):04d}",
            tenant="demo",
            flow_run_id=None,
            plans=[plan(target=f"aid-{i}", target_label=f"WS-{i:04d}") for i in range(plans)],
            reasons={},
            timeout_seconds=seconds,
            incident_title="ransomware on WS-0042",
            required_approvals=required,
        ).model_copy(update={"requester": requester})
        await self.store.create_approval(pending_row(request))
        await post_and_bind(
            self.chat, self.store, request, {"user_ids": list(approver_ids), "group": group}
        )
        return request

    async def message(self, approval_id: str) -> dict[str, Any]:
        binding = await self.store.slack_approval(approval_id)
        assert binding is not None
        return self.fake.messages[(binding.channel, binding.ts)]

    async def click(
        self,
        approval_id: str,
        user: str,
        action: str = APPROVE_ACTION_ID,
        *,
        ts: str | None = None,
        trigger_id: str = "",
        state: dict[str, Any] | None = None,
    ) -> Click:
        """A click parsed from a Slack-shaped payload on the approval's message."""
        binding = await self.store.slack_approval(approval_id)
        assert binding is not None
        payload = block_actions_payload(
            approval_id=approval_id,
            action_id=action,
            user_id=user,
            channel_id=binding.channel,
            message_ts=ts or binding.ts,
            response_url=self.fake.response_url(),
            trigger_id=trigger_id,
            state=state,
        )
        return parse_click(payload, team_id=TEAM_ID)

    def told(self) -> list[str]:
        """Ephemeral replies sent through response_url or chat.postEphemeral."""
        replies = [str(r.get("text", "")) for r in self.fake.responses]
        assert all(r.get("response_type") == "ephemeral" for r in self.fake.responses)
        return replies + [str(e.get("text", "")) for e in self.fake.ephemerals]


def has_buttons(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks", []))


def final_text(message: dict[str, Any]) -> str:
    return str(message["blocks"][-1]["text"]["text"])


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        for user in ("UALICE", "UBOB", "UCAROL", "UREQ", "UMALLORY", "UMANAGER"):
            slack.add_user(user)
        slack.add_user("UGUEST", is_restricted=True)
        slack.add_user("USINGLE", is_ultra_restricted=True)
        slack.add_user("UBOT", is_bot=True)
        slack.add_user("UGONE", deleted=True)
        members = ["UALICE", "UBOB", "UCAROL", "UREQ", "UGUEST", "USINGLE", "UBOT", "UGONE"]
        slack.add_usergroup(GROUP, members)
        slack.add_usergroup(ESCALATION, ["UMANAGER"])
        yield slack


@pytest.fixture
async def world(fake: FakeSlack, tmp_path: Path) -> AsyncIterator[World]:
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as store:
        client = WebClient(token=fake.token, base_url=fake.base_url, timeout=5)
        chat = SlackChat(
            client, channel=CHANNEL, response_url_prefixes=(fake.origin + "/response/",)
        )
        recorder = Recorder()
        clock = [utcnow()]
        service = ApprovalService(
            store,
            chat,
            KEY,
            team_id=TEAM_ID,
            escalation_group=ESCALATION,
            reminder_every=timedelta(minutes=10),
            escalate_after=timedelta(minutes=20),
            submit=recorder,
            now=lambda: clock[0],
        )
        yield World(fake, store, chat, service, recorder, clock)


# the happy path ------------------------------------------------------------------------------
async def test_an_approvers_click_resumes_with_a_slack_decision_and_removes_the_buttons(
    world: World,
) -> None:
    """Given a posted approval and a member of the approver group,
    When they click Approve,
    Then the run is resumed once with an approval by their user id on the slack channel,
    and the message shows who approved with the buttons gone."""
    request = await world.request()
    assert has_buttons(await world.message(request.id))

    handled = await world.service.handle(await world.click(request.id, "UALICE"))

    assert (handled.outcome, handled.status) == ("final", "approved")
    assert world.submitted.calls == [
        {
            "approval_id": request.id,
            "approve": True,
            "approver": "UALICE",
            "channel": "slack",
            "reason": "approved in Slack",
        }
    ]
    message = await world.message(request.id)
    assert not has_buttons(message)
    assert "*Approved* by <@UALICE>" in final_text(message)
    binding = await world.store.slack_approval(request.id)
    assert binding is not None and binding.final == "approved"


async def test_an_allow_listed_user_outside_the_group_may_approve(world: World) -> None:
    """Given an approval whose eligible approvers are one listed user id and no group,
    When that user clicks Approve,
    Then it is final; and a group member who is not listed is refused."""
    request = await world.request(approver_ids=("UCAROL",), group=None)
    refused = await world.service.handle(await world.click(request.id, "UALICE"))
    handled = await world.service.handle(await world.click(request.id, "UCAROL"))
    assert refused.outcome == "refused"
    assert handled.outcome == "final"
    assert [c["approver"] for c in world.submitted.calls] == ["UCAROL"]


# partial approval and the false-positive stop ------------------------------------------------
async def test_approve_selected_signs_exactly_the_ticked_plans(world: World) -> None:
    """Given a posted three-plan approval with per-plan checkboxes,
    When Alice unticks one and clicks Approve selected,
    Then the decision resumed names exactly the two ticked hashes, and the message says
    two of three were approved and which one was denied."""
    request = await world.request(plans=3)
    message = await world.message(request.id)
    ticked = [
        o["value"]
        for b in message["blocks"]
        for e in b.get("elements", [])
        if e.get("type") == "checkboxes"
        for o in e["options"]
    ]
    assert ticked == request.sha256s
    keep = [request.sha256s[0], request.sha256s[2]]

    click = await world.click(
        request.id, "UALICE", APPROVE_SELECTED_ACTION_ID, state=selection_state(request.id, keep)
    )
    handled = await world.service.handle(click)

    assert (handled.outcome, handled.status) == ("final", "partial")
    [call] = world.submitted.calls
    assert (call["approve"], call["approved"]) == (True, keep)
    text = final_text(await world.message(request.id))
    assert "*Approved 2 of 3* by <@UALICE>" in text
    assert "denied: Isolate host `WS-0001`" in text


@pytest.mark.parametrize(
    ("state", "told"),
    [
        (None, "Slack did not say which actions are ticked"),
        ("none", "No action is ticked"),
    ],
)
async def test_an_unknown_or_empty_selection_approves_nothing(
    world: World, state: str | None, told: str
) -> None:
    """Given Approve selected with no checkbox state from Slack, or nothing ticked,
    When handled,
    Then nothing is resumed, the clicker alone is told why, and the controls stay."""
    request = await world.request(plans=2)
    values = selection_state(request.id, []) if state == "none" else None
    click = await world.click(request.id, "UALICE", APPROVE_SELECTED_ACTION_ID, state=values)

    handled = await world.service.handle(click)

    assert handled.outcome == "refused"
    assert world.submitted.calls == []
    assert any(told in t for t in world.told())
    assert has_buttons(await world.message(request.id))


async def test_two_person_requests_offer_no_partial_approval(world: World) -> None:
    """Given a two-approver request (its message has no checkboxes),
    When someone forges an Approve selected click on it,
    Then it is refused: every approver approves the same set."""
    request = await world.request(plans=2, required=2)
    message = await world.message(request.id)
    assert not any(
        e.get("type") == "checkboxes" for b in message["blocks"] for e in b.get("elements", [])
    )
    click = await world.click(
        request.id,
        "UALICE",
        APPROVE_SELECTED_ACTION_ID,
        state=selection_state(request.id, request.sha256s[:1]),
    )
    assert (await world.service.handle(click)).outcome == "refused"
    assert world.submitted.calls == []


async def test_the_false_positive_stop_asks_why_then_signs_a_stopping_denial(
    world: World,
) -> None:
    """Given a posted approval,
    When Bob clicks "Deny (false positive — stop)" and gives his reason in the modal,
    Then the stop modal opened, the signed denial carries stop_response and his words, and
    the message says the response was stopped."""
    request = await world.request(plans=2)
    click = await world.click(request.id, "UBOB", DENY_STOP_ACTION_ID, trigger_id="trig-1")
    assert (await world.service.handle(click)).outcome == "modal"
    [opened] = world.fake.views
    assert opened["view"]["callback_id"] == "stanch_deny_stop_reason"

    submission = view_submission_payload(
        approval_id=request.id,
        reason="user is travelling, confirmed by phone",
        user_id="UBOB",
        callback_id="stanch_deny_stop_reason",
    )
    handled = await world.service.handle(parse_deny_reason(submission, team_id=TEAM_ID))

    assert (handled.outcome, handled.status) == ("final", "denied")
    [call] = world.submitted.calls
    assert call["approve"] is False and call["stop_response"] is True
    assert call["reason"] == "user is travelling, confirmed by phone"
    assert "response stopped" in final_text(await world.message(request.id))


# refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("UMALLORY", "not an approver"),
        ("UGUEST", "guest accounts may not approve"),
        ("USINGLE", "guest accounts may not approve"),
        ("UBOT", "bots may not approve"),
        ("UGONE", "deactivated accounts may not approve"),
        ("UNOBODY", "unknown Slack user"),
    ],
)
async def test_users_who_may_not_decide_are_refused_privately(
    world: World, user: str, why: str
) -> None:
    """Given a posted approval,
    When someone outside the group, a guest, a bot, a deactivated or unknown account clicks,
    Then only they are told why (ephemeral), nothing is resumed and the buttons stay."""
    request = await world.request()
    for action in (APPROVE_ACTION_ID, DENY_ACTION_ID):
        handled = await world.service.handle(await world.click(request.id, user, action))
        assert handled.outcome == "refused"
        assert why in handled.detail
    assert world.submitted.calls == []
    assert has_buttons(await world.message(request.id))
    told = world.told()
    assert len(told) == 2 and all(why in t for t in told)
    assert await world.store.votes(request.id) == []


async def test_the_requester_cannot_approve_their_own_request(world: World) -> None:
    """Given a request made by a Slack user who is also an approver,
    When they click Approve,
    Then they are refused privately and nothing is resumed; a colleague's Approve then
    decides it."""
    request = await world.request(requester="slack:UREQ")
    refused = await world.service.handle(await world.click(request.id, "UREQ"))
    assert refused.outcome == "refused"
    assert "someone else must approve" in world.told()[0]
    assert world.submitted.calls == []
    handled = await world.service.handle(await world.click(request.id, "UBOB"))
    assert handled.outcome == "final"
    assert world.submitted.calls[0]["approver"] == "UBOB"


async def test_the_requester_may_withdraw_by_denying(world: World) -> None:
    """Given a request made by a Slack user, and deny-reason modals switched off,
    When the requester clicks Deny,
    Then the request is denied (a withdrawal) and the run resumed with a denial."""
    world.service.ask_deny_reason = False
    request = await world.request(requester="slack:UREQ")
    handled = await world.service.handle(await world.click(request.id, "UREQ", DENY_ACTION_ID))
    assert (handled.outcome, handled.status) == ("final", "denied")
    assert world.submitted.calls[0]["approve"] is False


async def test_two_person_rule_needs_two_distinct_users_and_repeat_clicks_are_no_ops(
    world: World,
) -> None:
    """Given a request needing two approvers,
    When one approver clicks Approve twice,
    Then the first is recorded, the second is a no-op, nothing is resumed and the buttons
    stay; when a different approver clicks, the run resumes naming both in order."""
    request = await world.request(required=2)
    first = await world.service.handle(await world.click(request.id, "UALICE"))
    again = await world.service.handle(await world.click(request.id, "UALICE"))
    assert (first.outcome, again.outcome) == ("recorded", "duplicate")
    assert world.submitted.calls == []
    assert has_buttons(await world.message(request.id))
    assert "2 different approvers" in world.told()[1]
    row = await world.store.get_approval(request.id)
    assert row is not None and row.status == "pending"

    second = await world.service.handle(await world.click(request.id, "UBOB"))
    assert second.outcome == "final"
    assert [c["approver"] for c in world.submitted.calls] == ["UALICE,UBOB"]
    assert "<@UALICE>, <@UBOB>" in final_text(await world.message(request.id))


async def test_deny_wins_over_a_partial_approval_and_asks_for_a_reason(world: World) -> None:
    """Given a two-person request with one approval recorded,
    When another approver clicks Deny and submits a reason in the modal,
    Then the request is denied with that reason (shown escaped), the run is resumed with
    a denial, and a later Approve is told it is already decided."""
    request = await world.request(required=2)
    await world.service.handle(await world.click(request.id, "UALICE"))
    deny = await world.click(request.id, "UBOB", DENY_ACTION_ID, trigger_id="123.456.abc")
    opened = await world.service.handle(deny)
    assert opened.outcome == "modal"
    [view] = world.fake.views
    assert view["view"]["private_metadata"] == request.id
    assert world.submitted.calls == []

    reason = "false positive <!channel> & co"
    submitted = parse_deny_reason(
        view_submission_payload(approval_id=request.id, reason=reason, user_id="UBOB"),
        team_id=TEAM_ID,
    )
    handled = await world.service.handle(submitted)

    assert (handled.outcome, handled.status) == ("final", "denied")
    assert [(c["approve"], c["approver"], c["reason"]) for c in world.submitted.calls] == [
        (False, "UBOB", reason)
    ]
    line = final_text(await world.message(request.id))
    assert "*Denied* by <@UBOB>" in line
    assert "&lt;!channel&gt; &amp; co" in line and "<!channel>" not in line
    late = await world.service.handle(await world.click(request.id, "UCAROL"))
    assert late.outcome == "already-decided"
    assert len(world.submitted.calls) == 1


async def test_a_deny_reason_from_a_non_approver_is_refused(world: World) -> None:
    """Given a posted approval,
    When someone who may not decide submits a deny-reason modal for it,
    Then nothing is decided and they are told privately."""
    request = await world.request()
    submitted = DenyReason(
        team_id=TEAM_ID,
        user_id="UMALLORY",
        username="m",
        approval_id=request.id,
        reason="no",
        view_id="V1",
    )
    handled = await world.service.handle(submitted)
    assert handled.outcome == "refused"
    assert world.submitted.calls == []
    assert [e["user"] for e in world.fake.ephemerals] == ["UMALLORY"]


async def test_a_click_on_another_message_is_refused(world: World) -> None:
    """Given a posted approval,
    When an approver clicks a copy of its button on some other message,
    Then the click is refused privately and nothing is resumed."""
    request = await world.request()
    handled = await world.service.handle(
        await world.click(request.id, "UALICE", ts="1700000000.999999")
    )
    assert handled.outcome == "refused"
    assert "not on the approval message" in world.told()[0]
    assert world.submitted.calls == []


async def test_a_click_from_another_workspace_is_dropped(world: World) -> None:
    """Given a click value claiming another workspace,
    When the service gets it,
    Then it is refused without a reply and nothing is resumed."""
    request = await world.request()
    click = (await world.click(request.id, "UALICE")).model_copy(update={"team_id": "T0OTHER"})
    handled = await world.service.handle(click)
    assert handled.outcome == "refused"
    assert world.submitted.calls == [] and world.told() == []


async def test_an_unknown_approval_is_refused(world: World) -> None:
    """Given no approval with the button's id, When clicked, Then refused privately."""
    request = await world.request()
    click = (await world.click(request.id, "UALICE")).model_copy(
        update={"approval_id": "APR-unknown0000"}
    )
    handled = await world.service.handle(click)
    assert handled.outcome == "refused"
    assert world.submitted.calls == []


async def test_a_failed_resume_releases_the_claim_so_a_later_click_can_decide(
    world: World,
) -> None:
    """Given a resume that fails (the run is not reachable yet),
    When an approver clicks, then clicks again after it is fixed,
    Then the first click is reported as an error with the buttons kept, and the second
    decides."""
    request = await world.request()
    world.submitted.fail_with = ApprovalError("did not pause")
    failed = await world.service.handle(await world.click(request.id, "UALICE"))
    assert failed.outcome == "error"
    assert has_buttons(await world.message(request.id))
    assert "could not resume" in world.told()[0]
    world.submitted.fail_with = None
    # A repeat vote by the same user is a no-op, so another approver decides.
    handled = await world.service.handle(await world.click(request.id, "UBOB"))
    assert handled.outcome == "final"


# the sweeper ---------------------------------------------------------------------------------
async def test_sweeper_expires_a_request_past_its_deadline_with_a_signed_denial(
    world: World,
) -> None:
    """Given a pending request whose deadline has passed,
    When the sweeper runs,
    Then it resumes the run with a denial on the expiry channel, marks the message
    Expired without buttons, and a later click is told it is already expired."""
    request = await world.request(seconds=60)
    world.clock[0] = request.deadline + timedelta(seconds=1)

    assert await world.service.sweep() == [(request.id, "expired")]

    assert [(c["approve"], c["channel"]) for c in world.submitted.calls] == [(False, "expiry")]
    message = await world.message(request.id)
    assert not has_buttons(message)
    assert "*Expired*" in final_text(message)
    assert await world.service.sweep() == []
    late = await world.service.handle(await world.click(request.id, "UALICE"))
    assert late.outcome == "already-decided" and "expired" in late.detail


async def test_sweeper_records_expiry_when_the_run_cannot_be_resumed(world: World) -> None:
    """Given an expired request whose flow run is gone,
    When the sweeper runs,
    Then the approval is recorded as expired in the store and the message says so."""
    request = await world.request(seconds=60)
    world.clock[0] = request.deadline + timedelta(seconds=1)
    world.submitted.fail_with = ApprovalError("already ended")
    assert await world.service.sweep() == [(request.id, "expired (run not resumable)")]
    row = await world.store.get_approval(request.id)
    assert row is not None and (row.status, row.decided_by) == ("expired", "stanch:expiry")
    assert "*Expired*" in final_text(await world.message(request.id))


async def test_sweeper_reminds_then_escalates_to_the_second_group(world: World) -> None:
    """Given a pending request and a manager who is only in the escalation group,
    When the sweeper runs after the reminder interval and again after the escalation delay,
    Then a reminder is posted in the thread, then an escalation mentioning the second
    group, and only from then on may the manager approve."""
    request = await world.request(seconds=3600)
    start = world.clock[0]
    assert await world.service.sweep() == []
    early = await world.service.handle(await world.click(request.id, "UMANAGER"))
    assert early.outcome == "refused"

    world.clock[0] = start + timedelta(minutes=11)
    assert await world.service.sweep() == [(request.id, "reminded")]
    world.clock[0] = start + timedelta(minutes=21)
    assert await world.service.sweep() == [(request.id, "escalated")]

    binding = await world.store.slack_approval(request.id)
    assert binding is not None
    thread = [m for m in world.fake.history if m.get("thread_ts") == binding.ts]
    assert len(thread) == 2
    assert "Reminder" in thread[0]["text"] and request.id in thread[0]["text"]
    assert thread[1]["text"].startswith(f"<!subteam^{ESCALATION}>")
    handled = await world.service.handle(await world.click(request.id, "UMANAGER"))
    assert handled.outcome == "final"


def test_no_naive_deadline_surprises() -> None:
    """Given a deadline as SQLite returns it (naive UTC),
    When compared with an aware now,
    Then the service's normalisation makes it aware in UTC."""
    from flows.approval.service import _aware

    naive = datetime(2026, 11, 21, 7, 0)
    assert _aware(naive) == datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
