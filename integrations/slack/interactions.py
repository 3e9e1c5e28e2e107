"""Parse Slack interaction payloads (button clicks, modal submissions) into typed values.

Call these only on a body whose signature verified (HTTP) or that came over Socket Mode.
The tree::

    InteractionError         the payload cannot be acted on
    ├── MalformedPayload     not a form body with a ``payload`` JSON we understand
    ├── SelectionChange      a plan checkbox was ticked or unticked: acknowledge, no decision
    ├── WrongTeam            sent from, or by a user of, another workspace
    └── WrongMessage         the click is not on the message stanch posted for the approval
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from integrations.slack.approval_message import (
    APPROVAL_ID,
    APPROVE_ACTION_ID,
    APPROVE_SELECTED_ACTION_ID,
    DENY_ACTION_ID,
    DENY_REASON_CALLBACK_ID,
    DENY_STOP_ACTION_ID,
    DENY_STOP_CALLBACK_ID,
    REASON_ACTION_ID,
    REASON_BLOCK_ID,
    REASON_MAX_LENGTH,
    SELECT_ACTION_ID,
    SELECT_BLOCK_PREFIX,
    SHA256,
    SLACK_ID,
)
from integrations.slack.case_messages import (
    CASE_ACTIONS,
    CASE_CLOSE_CALLBACK_ID,
    CASE_NOTE_CALLBACK_ID,
    DISPOSITION_BLOCK_ID,
    DUPLICATE_BLOCK_ID,
    INCIDENT_ID,
    NOTE_BLOCK_ID,
    SUMMARY_BLOCK_ID,
    VALUE_ACTION_ID,
)

MAX_BODY_BYTES = 64 * 1024
"""Interaction bodies are a few kilobytes; refuse to parse anything far larger."""


class InteractionError(Exception):
    """The interaction payload cannot be acted on; answer the request and do nothing."""


class MalformedPayload(InteractionError):
    """Not a form-encoded ``payload`` field holding an interaction stanch understands."""


class SelectionChange(InteractionError):
    """A plan checkbox was ticked or unticked. Slack sends each change; nothing is decided
    until a button is clicked, so the request is acknowledged and otherwise ignored."""


class WrongTeam(InteractionError):
    """The payload comes from another workspace, or its user belongs to one."""


class WrongMessage(InteractionError):
    """The click came from a message other than the one stored for the approval.

    A button can be copied into another message; its value alone proves nothing.
    """


class Decision(StrEnum):
    """What a button asks for."""

    APPROVE = "approve"
    APPROVE_SELECTED = "approve_selected"
    DENY = "deny"
    DENY_STOP = "deny_stop"


_DECISIONS = {
    APPROVE_ACTION_ID: Decision.APPROVE,
    APPROVE_SELECTED_ACTION_ID: Decision.APPROVE_SELECTED,
    DENY_ACTION_ID: Decision.DENY,
    DENY_STOP_ACTION_ID: Decision.DENY_STOP,
}


class Click(BaseModel):
    """An Approve or Deny click on an approval message.

    Attributes:
        team_id: the workspace the click came from.
        user_id: who clicked; the only identity authorisation may use.
        username: their handle, for display and audit only.
        action: approve or deny.
        approval_id: the button's value.
        channel_id: where the clicked message is.
        message_ts: the clicked message's ``ts``.
        response_url: where to send an ephemeral reply to the clicker.
        trigger_id: lets a modal be opened for the next few seconds.
        action_ts: when Slack saw the click.
        selected: for *Approve selected*, the plan hashes ticked in the message when it
            was clicked; ``None`` when Slack sent no state for the checkboxes (then
            nothing is approved: the selection is never guessed).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["click"] = "click"
    team_id: str
    user_id: str
    username: str
    action: Decision
    approval_id: str
    channel_id: str
    message_ts: str
    response_url: str
    trigger_id: str
    action_ts: str
    selected: tuple[str, ...] | None = None


class DenyReason(BaseModel):
    """A submitted deny-reason modal.

    Attributes:
        team_id: the workspace it came from.
        user_id: who submitted it.
        username: their handle, for display and audit only.
        approval_id: from the modal's ``private_metadata``.
        reason: the denier's words (attacker-influenced when echoed).
        view_id: Slack's id of the submitted view.
        stop: the false-positive modal: the denial stops the response.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["deny_reason"] = "deny_reason"
    team_id: str
    user_id: str
    username: str
    approval_id: str
    reason: str
    view_id: str
    stop: bool = False


class CaseClick(BaseModel):
    """A click on one of the incident summary's case buttons.

    Attributes:
        action: ``take``, ``note`` or ``close``.
        incident_id: the button's value.
        channel_id, message_ts: the clicked message (must be the incident's summary).
        response_url, trigger_id: to answer the clicker, and to open a modal.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["case_click"] = "case_click"
    team_id: str
    user_id: str
    username: str
    action: Literal["take", "note", "close"]
    incident_id: str
    channel_id: str
    message_ts: str
    response_url: str
    trigger_id: str


class CaseSubmission(BaseModel):
    """A submitted "Add note" or "Close…" modal.

    Attributes:
        action: ``note`` or ``close``.
        incident_id: from the modal's ``private_metadata``.
        text: the note, or the closure's summary (attacker-influenced when echoed).
        disposition: the chosen disposition (``close``).
        duplicate_of: the incident it duplicates, when given (``close``).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["case_submission"] = "case_submission"
    team_id: str
    user_id: str
    username: str
    action: Literal["note", "close"]
    incident_id: str
    text: str
    disposition: str | None = None
    duplicate_of: str | None = None


Interaction = Click | DenyReason | CaseClick | CaseSubmission
"""Every interaction stanch takes from Slack."""

_CASE_CLICKS: dict[str, Literal["take", "note", "close"]] = {
    CASE_ACTIONS[0]: "take",
    CASE_ACTIONS[1]: "note",
    CASE_ACTIONS[2]: "close",
}


# Slack's payload shapes, reduced to the fields stanch reads; everything else is ignored.
class _Team(BaseModel):
    id: str = Field(pattern=SLACK_ID)


class _User(BaseModel):
    id: str = Field(pattern=SLACK_ID)
    username: str = ""
    name: str = ""
    team_id: str | None = None


class _Action(BaseModel):
    action_id: str
    value: str = ""
    action_ts: str = ""


class _Container(BaseModel):
    type: str
    message_ts: str | None = None
    channel_id: str | None = None


class _Ref(BaseModel):
    id: str | None = None
    ts: str | None = None


class _Option(BaseModel):
    value: str = ""


class _Input(BaseModel):
    type: str = "plain_text_input"
    value: str | None = None
    selected_option: _Option | None = None  # a static select (the Close modal's disposition)
    selected_options: list[_Option] | None = None  # checkboxes (partial approval)


class _State(BaseModel):
    values: dict[str, dict[str, _Input]]


class _BlockActions(BaseModel):
    type: Literal["block_actions"]
    team: _Team
    user: _User
    api_app_id: str | None = None
    actions: list[_Action] = Field(min_length=1)
    container: _Container
    channel: _Ref | None = None
    message: _Ref | None = None
    response_url: str = ""
    trigger_id: str = ""
    # Slack documents a full ``state`` on block_actions, but client libraries treat it as
    # optional; without it a selection is unknown, and nothing is approved.
    state: _State | None = None


class _View(BaseModel):
    id: str
    callback_id: str
    private_metadata: str = ""
    state: _State


class _ViewSubmission(BaseModel):
    type: Literal["view_submission"]
    team: _Team
    user: _User
    api_app_id: str | None = None
    view: _View


def payload_from_body(body: bytes | str) -> dict[str, Any]:
    """The JSON object in the form-encoded ``payload=`` field of an interaction request.

    Raises:
        MalformedPayload: not exactly one ``payload`` field holding a JSON object.
    """
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedPayload("interaction body is too large")
    try:
        form = parse_qs(raw.decode("utf-8"), strict_parsing=True, max_num_fields=10)
        values = form.get("payload", [])
        if len(values) != 1:
            raise MalformedPayload("expected exactly one payload field")
        payload = json.loads(values[0])
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedPayload(f"undecodable interaction body: {type(exc).__name__}") from exc
    if not isinstance(payload, dict):
        raise MalformedPayload("payload is not a JSON object")
    return payload


def _check_team(team: _Team, user: _User, team_id: str) -> None:
    if team.id != team_id:
        raise WrongTeam(f"payload from workspace {team.id}, expected {team_id}")
    # A Slack Connect channel can carry clicks from users of another workspace.
    if user.team_id is not None and user.team_id != team_id:
        raise WrongTeam(f"user {user.id} belongs to workspace {user.team_id}")


def _check_app(app_id: str | None, expected: str | None) -> None:
    if expected is not None and app_id != expected:
        raise WrongTeam(f"payload for app {app_id}, expected {expected}")


def _validate(
    model: type[_BlockActions] | type[_ViewSubmission], payload: Mapping[str, Any]
) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        # The field locations say what is wrong without echoing payload values.
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise MalformedPayload(f"unexpected {model.__name__[1:]} payload at: {where}") from exc


def _message_of(parsed: _BlockActions) -> tuple[str, str]:
    container = parsed.container
    if container.type != "message" or not container.message_ts or not container.channel_id:
        raise MalformedPayload("click is not on a message")
    # The message form of the same data must agree with the container when both are sent.
    if (parsed.channel and parsed.channel.id not in (None, container.channel_id)) or (
        parsed.message and parsed.message.ts not in (None, container.message_ts)
    ):
        raise MalformedPayload("container and message disagree")
    return container.channel_id, container.message_ts


def parse_case_click(
    payload: Mapping[str, Any], *, team_id: str, app_id: str | None = None
) -> CaseClick:
    """A ``block_actions`` payload from one of the summary's case buttons.

    Raises:
        MalformedPayload: not a click on a case button, or its value is not an incident id.
        WrongTeam: another workspace, a user of another workspace, or another app.
    """
    parsed: _BlockActions = _validate(_BlockActions, payload)
    _check_team(parsed.team, parsed.user, team_id)
    _check_app(parsed.api_app_id, app_id)
    action = parsed.actions[0]
    which = _CASE_CLICKS.get(action.action_id)
    if which is None:
        raise MalformedPayload(f"not a case button: {action.action_id[:64]!r}")
    if not _matches(INCIDENT_ID, action.value):
        raise MalformedPayload("button value is not an incident id")
    channel_id, message_ts = _message_of(parsed)
    return CaseClick(
        team_id=parsed.team.id,
        user_id=parsed.user.id,
        username=parsed.user.username or parsed.user.name,
        action=which,
        incident_id=action.value,
        channel_id=channel_id,
        message_ts=message_ts,
        response_url=parsed.response_url,
        trigger_id=parsed.trigger_id,
    )


def _field(view: _View, block_id: str) -> _Input | None:
    return view.state.values.get(block_id, {}).get(VALUE_ACTION_ID)


def parse_case_submission(
    payload: Mapping[str, Any], *, team_id: str, app_id: str | None = None
) -> CaseSubmission:
    """A ``view_submission`` of the "Add note" or "Close…" modal.

    Raises:
        MalformedPayload: another modal, no incident id, an empty note or summary.
        WrongTeam: another workspace, a user of another workspace, or another app.
    """
    parsed: _ViewSubmission = _validate(_ViewSubmission, payload)
    _check_team(parsed.team, parsed.user, team_id)
    _check_app(parsed.api_app_id, app_id)
    view = parsed.view
    if not _matches(INCIDENT_ID, view.private_metadata):
        raise MalformedPayload("modal metadata is not an incident id")
    common = {
        "team_id": parsed.team.id,
        "user_id": parsed.user.id,
        "username": parsed.user.username or parsed.user.name,
        "incident_id": view.private_metadata,
    }
    if view.callback_id == CASE_NOTE_CALLBACK_ID:
        note = _field(view, NOTE_BLOCK_ID)
        return CaseSubmission(action="note", text=(note.value or "") if note else "", **common)
    if view.callback_id == CASE_CLOSE_CALLBACK_ID:
        chosen = _field(view, DISPOSITION_BLOCK_ID)
        summary = _field(view, SUMMARY_BLOCK_ID)
        duplicate = _field(view, DUPLICATE_BLOCK_ID)
        return CaseSubmission(
            action="close",
            text=(summary.value or "") if summary else "",
            disposition=chosen.selected_option.value if chosen and chosen.selected_option else None,
            duplicate_of=((duplicate.value or "").strip() or None) if duplicate else None,
            **common,
        )
    raise MalformedPayload(f"not a case modal: {view.callback_id[:64]!r}")


def parse_click(payload: Mapping[str, Any], *, team_id: str, app_id: str | None = None) -> Click:
    """A ``block_actions`` payload from one of stanch's approval buttons.

    Args:
        payload: the decoded interaction JSON.
        team_id: the only workspace stanch accepts clicks from.
        app_id: when given, the only app id accepted.

    Raises:
        MalformedPayload: not a click on an approval button.
        WrongTeam: another workspace, a user of another workspace, or another app.
    """
    parsed: _BlockActions = _validate(_BlockActions, payload)
    _check_team(parsed.team, parsed.user, team_id)
    _check_app(parsed.api_app_id, app_id)
    action = parsed.actions[0]
    if action.action_id == SELECT_ACTION_ID:
        raise SelectionChange("a plan checkbox changed")
    decision = _DECISIONS.get(action.action_id)
    if decision is None:
        raise MalformedPayload(f"not an approval button: {action.action_id[:64]!r}")
    if not _matches(APPROVAL_ID, action.value):
        raise MalformedPayload("button value is not an approval id")
    channel_id, message_ts = _message_of(parsed)
    return Click(
        team_id=parsed.team.id,
        user_id=parsed.user.id,
        username=parsed.user.username or parsed.user.name,
        action=decision,
        approval_id=action.value,
        channel_id=channel_id,
        message_ts=message_ts,
        response_url=parsed.response_url,
        trigger_id=parsed.trigger_id,
        action_ts=action.action_ts,
        selected=(
            _selection(parsed.state, action.value)
            if decision == Decision.APPROVE_SELECTED
            else None
        ),
    )


def _selection(state: _State | None, approval_id: str) -> tuple[str, ...] | None:
    """The plan hashes ticked in this approval's checkbox groups, or ``None`` if unknown.

    Raises:
        MalformedPayload: a ticked value is not a plan hash.
    """
    if state is None:
        return None
    prefix = f"{SELECT_BLOCK_PREFIX}{approval_id}:"
    groups = [
        inputs[SELECT_ACTION_ID]
        for block_id, inputs in state.values.items()
        if block_id.startswith(prefix) and SELECT_ACTION_ID in inputs
    ]
    if not groups:
        return None
    ticked: list[str] = []
    for group in groups:
        for option in group.selected_options or []:
            if not _matches(SHA256, option.value):
                raise MalformedPayload("a ticked option is not a plan hash")
            if option.value not in ticked:
                ticked.append(option.value)
    return tuple(ticked)


def parse_deny_reason(
    payload: Mapping[str, Any], *, team_id: str, app_id: str | None = None
) -> DenyReason:
    """A ``view_submission`` payload of the deny-reason modal.

    Raises:
        MalformedPayload: another modal, no approval id, or an empty or over-long reason.
        WrongTeam: another workspace, a user of another workspace, or another app.
    """
    parsed: _ViewSubmission = _validate(_ViewSubmission, payload)
    _check_team(parsed.team, parsed.user, team_id)
    _check_app(parsed.api_app_id, app_id)
    view = parsed.view
    if view.callback_id not in (DENY_REASON_CALLBACK_ID, DENY_STOP_CALLBACK_ID):
        raise MalformedPayload(f"not the deny-reason modal: {view.callback_id[:64]!r}")
    if not _matches(APPROVAL_ID, view.private_metadata):
        raise MalformedPayload("modal metadata is not an approval id")
    field = view.state.values.get(REASON_BLOCK_ID, {}).get(REASON_ACTION_ID)
    reason = (field.value or "").strip() if field is not None else ""
    if not reason:
        raise MalformedPayload("deny reason is empty")
    if len(reason) > REASON_MAX_LENGTH:
        raise MalformedPayload("deny reason is too long")
    return DenyReason(
        team_id=parsed.team.id,
        user_id=parsed.user.id,
        username=parsed.user.username or parsed.user.name,
        approval_id=view.private_metadata,
        reason=reason,
        view_id=view.id,
        stop=view.callback_id == DENY_STOP_CALLBACK_ID,
    )


def parse_payload(
    payload: Mapping[str, Any], *, team_id: str, app_id: str | None = None
) -> Interaction:
    """A decoded interaction payload as an approval click or deny reason, or a case click
    or submission.

    Raises:
        MalformedPayload: not an interaction stanch handles.
        WrongTeam: from another workspace or app.
    """
    kind = payload.get("type")
    if kind == "block_actions":
        actions = payload.get("actions")
        first = actions[0] if isinstance(actions, list) and actions else {}
        if isinstance(first, dict) and first.get("action_id") in CASE_ACTIONS:
            return parse_case_click(payload, team_id=team_id, app_id=app_id)
        return parse_click(payload, team_id=team_id, app_id=app_id)
    if kind == "view_submission":
        view = payload.get("view")
        callback = view.get("callback_id") if isinstance(view, dict) else None
        if callback in (CASE_NOTE_CALLBACK_ID, CASE_CLOSE_CALLBACK_ID):
            return parse_case_submission(payload, team_id=team_id, app_id=app_id)
        return parse_deny_reason(payload, team_id=team_id, app_id=app_id)
    raise MalformedPayload(f"unsupported interaction type {str(kind)[:32]!r}")


def parse_interaction(body: bytes | str, *, team_id: str, app_id: str | None = None) -> Interaction:
    """Parse a verified interaction request body into one of the :data:`Interaction` values.

    Args:
        body: the raw ``application/x-www-form-urlencoded`` body.
        team_id: the only workspace accepted.
        app_id: when given, the only app id accepted.

    Raises:
        MalformedPayload: not an interaction stanch handles.
        WrongTeam: from another workspace or app.
    """
    return parse_payload(payload_from_body(body), team_id=team_id, app_id=app_id)


def ensure_same_message(click: Click, *, channel_id: str, message_ts: str) -> Click:
    """Check the click is on the message stored for its approval.

    Args:
        click: a parsed click.
        channel_id: the channel stanch posted the approval message in.
        message_ts: that message's ``ts``.

    Raises:
        WrongMessage: the click came from any other message.
    """
    if (click.channel_id, click.message_ts) != (channel_id, message_ts):
        raise WrongMessage(
            f"click on {click.channel_id}/{click.message_ts} is not on the "
            f"approval message for {click.approval_id}"
        )
    return click


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None
