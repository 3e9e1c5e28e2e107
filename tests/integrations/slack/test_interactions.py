"""Interaction payloads: Slack's block_actions and view_submission shapes, parsed and checked."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from integrations.slack.fake import (
    TEAM_ID,
    block_actions_payload,
    selection_state,
    signed_interaction,
    view_submission_payload,
)
from integrations.slack.interactions import (
    Click,
    Decision,
    DenyReason,
    MalformedPayload,
    SelectionChange,
    WrongMessage,
    WrongTeam,
    ensure_same_message,
    parse_click,
    parse_deny_reason,
    parse_interaction,
    payload_from_body,
)
from integrations.slack.signing import SlackRequestVerifier

APPROVAL = "APR-0123456789"
CHANNEL = "C0APPROVALS"
TS = "1700000000.000001"


def click_payload(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "approval_id": APPROVAL,
        "action_id": "stanch_approve",
        "user_id": "U0ALICE",
        "channel_id": CHANNEL,
        "message_ts": TS,
        "username": "alice",
    }
    values.update(overrides)
    return block_actions_payload(**values)


def form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_signed_click_round_trips_to_a_typed_click() -> None:
    """Given a block_actions payload as Slack sends it, signed and form-encoded
    When verified and parsed
    Then every field stanch needs is on the Click."""
    headers, body = signed_interaction("s3cret", click_payload(), 1_700_000_000)
    verified = SlackRequestVerifier(SecretStr("s3cret"), clock=lambda: 1_700_000_000).verify(
        headers, body
    )

    click = parse_interaction(verified.body, team_id=TEAM_ID, app_id="A0STANCH")

    assert click == Click(
        team_id=TEAM_ID,
        user_id="U0ALICE",
        username="alice",
        action=Decision.APPROVE,
        approval_id=APPROVAL,
        channel_id=CHANNEL,
        message_ts=TS,
        response_url="https://hooks.slack.com/actions/T0STANCH/1/abc",
        trigger_id="13345224609.738474920.8088930838d88f008e0",
        action_ts="1700000100.000001",
    )


def test_deny_button_is_a_deny_click() -> None:
    """Given a click on the Deny button
    When parsed
    Then the action is deny."""
    assert parse_click(click_payload(action_id="stanch_deny"), team_id=TEAM_ID).action == "deny"


def test_submitted_deny_reason_is_typed() -> None:
    """Given the deny-reason modal submitted with a reason
    When parsed
    Then the approval id comes from private_metadata and the reason is trimmed."""
    payload = view_submission_payload(
        approval_id=APPROVAL, reason="  benign admin tool \n", user_id="U0BOB", username="bob"
    )

    reason = parse_interaction(form(payload), team_id=TEAM_ID)

    assert reason == DenyReason(
        team_id=TEAM_ID,
        user_id="U0BOB",
        username="bob",
        approval_id=APPROVAL,
        reason="benign admin tool",
        view_id="V0DENY",
    )


SHA_A, SHA_B, SHA_C = "aa" * 32, "bb" * 32, "cc" * 32


def test_approve_selected_carries_exactly_the_ticked_plans() -> None:
    """Given "Approve selected" with two of three plans ticked across two checkbox groups
    When parsed
    Then the click names exactly those hashes, in the message's order."""
    state = selection_state(APPROVAL, [SHA_A, SHA_C])
    click = parse_click(
        click_payload(action_id="stanch_approve_selected", state=state), team_id=TEAM_ID
    )
    assert click.action == Decision.APPROVE_SELECTED
    assert click.selected == (SHA_A, SHA_C)


@pytest.mark.parametrize(
    ("state", "selected"),
    [
        (None, None),  # Slack sent no state: the selection is unknown
        ({}, None),  # a state without this approval's checkboxes: unknown too
        (selection_state(APPROVAL, []), ()),  # everything unticked: an empty selection
        (selection_state("APR-someoneelse", [SHA_A]), None),  # another approval's boxes
    ],
)
def test_an_unknown_selection_is_never_guessed(
    state: dict[str, Any] | None, selected: tuple[str, ...] | None
) -> None:
    """Given "Approve selected" with no state, a state without this approval's checkboxes,
    or everything unticked
    When parsed
    Then the selection is None (unknown) or empty, never "all"."""
    click = parse_click(
        click_payload(action_id="stanch_approve_selected", state=state), team_id=TEAM_ID
    )
    assert click.selected == selected


def test_a_ticked_value_that_is_not_a_hash_is_malformed() -> None:
    """Given a checkbox value someone crafted
    When parsed
    Then MalformedPayload: only plan hashes may be selected."""
    state = selection_state(APPROVAL, ["<!channel>"])
    with pytest.raises(MalformedPayload, match="plan hash"):
        parse_click(
            click_payload(action_id="stanch_approve_selected", state=state), team_id=TEAM_ID
        )


def test_plain_approve_ignores_the_checkboxes() -> None:
    """Given "Approve all" clicked while some boxes are unticked
    When parsed
    Then no selection rides on the click: it approves everything asked."""
    state = selection_state(APPROVAL, [SHA_A])
    assert parse_click(click_payload(state=state), team_id=TEAM_ID).selected is None


def test_ticking_a_checkbox_is_a_selection_change_not_a_decision() -> None:
    """Given the block_actions Slack sends when a plan checkbox is ticked
    When parsed
    Then SelectionChange, so the route acknowledges it and decides nothing."""
    with pytest.raises(SelectionChange):
        parse_click(click_payload(action_id="stanch_select"), team_id=TEAM_ID)


def test_the_stop_button_and_modal_are_typed() -> None:
    """Given a click on "Deny (false positive — stop)" and its modal submitted
    When parsed
    Then the click is deny_stop and the reason says stop."""
    assert parse_click(click_payload(action_id="stanch_deny_stop"), team_id=TEAM_ID).action == (
        Decision.DENY_STOP
    )
    payload = view_submission_payload(
        approval_id=APPROVAL,
        reason="user is travelling, confirmed by phone",
        user_id="U0BOB",
        callback_id="stanch_deny_stop_reason",
    )
    reason = parse_interaction(form(payload), team_id=TEAM_ID)
    assert isinstance(reason, DenyReason) and reason.stop is True


def test_click_from_another_workspace_is_refused() -> None:
    """Given a click whose team is another workspace
    When parsed
    Then WrongTeam."""
    payload = click_payload(team_id="T0EVIL")
    del payload["user"]["team_id"]  # so only team.id can give it away
    with pytest.raises(WrongTeam, match="from workspace T0EVIL"):
        parse_click(payload, team_id=TEAM_ID)


def test_click_by_a_user_of_another_workspace_is_refused() -> None:
    """Given a click in our workspace by a user from another one (a Slack Connect channel)
    When parsed
    Then WrongTeam."""
    payload = click_payload()
    payload["user"]["team_id"] = "T0PARTNER"
    with pytest.raises(WrongTeam, match="belongs"):
        parse_click(payload, team_id=TEAM_ID)


def test_click_for_another_app_is_refused_when_the_app_is_pinned() -> None:
    """Given a click addressed to another app id
    When parsed with our app id
    Then WrongTeam."""
    payload = click_payload()
    payload["api_app_id"] = "A0OTHER"
    with pytest.raises(WrongTeam, match="app"):
        parse_click(payload, team_id=TEAM_ID, app_id="A0STANCH")


def test_deny_reason_from_another_workspace_is_refused() -> None:
    """Given a modal submission from another workspace
    When parsed
    Then WrongTeam."""
    payload = view_submission_payload(
        approval_id=APPROVAL, reason="x", user_id="U0BOB", team_id="T0EVIL"
    )
    with pytest.raises(WrongTeam):
        parse_deny_reason(payload, team_id=TEAM_ID)


def test_click_on_another_message_is_refused() -> None:
    """Given a valid click whose message ts or channel differ from the stored message
    (a copied button)
    When checked against the stored message
    Then WrongMessage; the stored message itself passes."""
    click = parse_click(click_payload(), team_id=TEAM_ID)

    assert ensure_same_message(click, channel_id=CHANNEL, message_ts=TS) is click
    with pytest.raises(WrongMessage):
        ensure_same_message(click, channel_id=CHANNEL, message_ts="1700000000.000002")
    with pytest.raises(WrongMessage):
        ensure_same_message(click, channel_id="C0OTHER", message_ts=TS)


def mutate(path: str, value: Any) -> dict[str, Any]:
    payload = click_payload()
    *parents, last = path.split(".")
    node: Any = payload
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param(
            mutate("actions.0.action_id", "other_button"),
            "not an approval button",
            id="foreign button",
        ),
        pytest.param(mutate("actions.0.value", "APR 1 <!channel>"), "approval id", id="odd value"),
        pytest.param(mutate("actions", []), "actions", id="no actions"),
        pytest.param(mutate("user.id", "alice"), "user.id", id="user id not an id"),
        pytest.param(mutate("user", ...), "user", id="no user"),
        pytest.param(mutate("team", ...), "team", id="no team"),
        pytest.param(mutate("container.type", "view"), "not on a message", id="not a message"),
        pytest.param(mutate("container.message_ts", None), "not on a message", id="no ts"),
        pytest.param(mutate("message.ts", "1.2"), "disagree", id="message ts disagrees"),
        pytest.param(mutate("channel.id", "C0OTHER"), "disagree", id="channel disagrees"),
    ],
)
def test_malformed_clicks_are_typed_errors(payload: dict[str, Any], match: str) -> None:
    """Given a block_actions payload missing or contradicting a field stanch relies on
    When parsed
    Then MalformedPayload says where."""
    with pytest.raises(MalformedPayload, match=match):
        parse_click(payload, team_id=TEAM_ID)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"reason": "   "}, "empty"),
        ({"reason": "x" * 501}, "too long"),
        ({"callback_id": "someone_elses_modal"}, "not the deny-reason modal"),
        ({"approval_id": ""}, "approval id"),
    ],
)
def test_malformed_deny_reasons_are_typed_errors(overrides: dict[str, Any], match: str) -> None:
    """Given a modal submission that is empty, too long, another modal or lacks the id
    When parsed
    Then MalformedPayload."""
    values: dict[str, Any] = {"approval_id": APPROVAL, "reason": "why", "user_id": "U0BOB"}
    values.update(overrides)
    with pytest.raises(MalformedPayload, match=match):
        parse_deny_reason(view_submission_payload(**values), team_id=TEAM_ID)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"payload=%7Bnot-json", id="bad json"),
        pytest.param(b"payload=%5B1%5D", id="json array"),
        pytest.param(b"payload=%7B%7D&payload=%7B%7D", id="two payloads"),
        pytest.param(b"token=abc", id="no payload"),
        pytest.param(b"payload=\xff\xfe", id="not utf-8"),
        pytest.param(b"payload=" + b"a" * 70_000, id="too large"),
    ],
)
def test_undecodable_bodies_are_malformed(body: bytes) -> None:
    """Given a body that is not one form field holding a JSON object
    When decoded
    Then MalformedPayload (never a bare ValueError)."""
    with pytest.raises(MalformedPayload):
        payload_from_body(body)


def test_other_interaction_types_are_refused() -> None:
    """Given a shortcut payload
    When parsed
    Then MalformedPayload names the unsupported type."""
    with pytest.raises(MalformedPayload, match="shortcut"):
        parse_interaction(form({"type": "shortcut", "team": {"id": TEAM_ID}}), team_id=TEAM_ID)
