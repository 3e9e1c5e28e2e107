"""Block Kit for approval requests, their final state, and the deny-reason modal.

Alert data is attacker-controlled. It only ever reaches Slack as ``plain_text`` or as
``mrkdwn`` escaped with :func:`escape` and marked ``verbatim``; no ``url`` field is built
from it. The only ``<…>`` control sequences emitted are mentions of validated user ids.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

APPROVE_ACTION_ID = "stanch_approve"
DENY_ACTION_ID = "stanch_deny"
DENY_REASON_CALLBACK_ID = "stanch_deny_reason"
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "value"
BLOCK_ID_PREFIX = "stanch_approval:"

# Slack's documented Block Kit limits.
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
HEADER_TEXT_LIMIT = 150
CONFIRM_TEXT_LIMIT = 300
MAX_BLOCKS = 50
MODAL_TITLE_LIMIT = 24
FALLBACK_TEXT_LIMIT = 3000
REASON_MAX_LENGTH = 500
MAX_PLANS = 20
"""Per plan two blocks; 20 plans keeps a message well under Slack's 50-block limit."""
MAX_EVIDENCE_LINES = 15

ELLIPSIS = "…"
# U+02CB looks like a backtick but cannot close a code span.
_BACKTICK_STANDIN = "\u02cb"
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})

SLACK_ID = r"^[A-Z0-9]{2,32}$"
APPROVAL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")

JSON = dict[str, Any]


def escape(text: str) -> str:
    """Escape Slack's three mrkdwn control characters; nothing else is decoded by Slack."""
    return text.translate(_ESCAPES)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def escape_clipped(text: str, limit: int) -> str:
    """Escape ``text`` and cut it so the escaped form fits ``limit``, never mid-entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out: list[str] = []
    used = 0
    for char in text:
        piece = escape(char)
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + ELLIPSIS


def code(text: str, limit: int = 200) -> str:
    """An escaped mrkdwn code span that the value cannot close or break out of."""
    flat = " ".join(text.split()).replace("`", _BACKTICK_STANDIN)
    return f"`{escape_clipped(flat, limit)}`"


def plain(text: str, limit: int = SECTION_TEXT_LIMIT) -> JSON:
    """A ``plain_text`` object: Slack does not parse mentions or links in it."""
    return {"type": "plain_text", "text": clip(text, limit) or " ", "emoji": False}


def mrkdwn(text: str) -> JSON:
    """A ``mrkdwn`` object for text already escaped; ``verbatim`` stops auto-linking."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _mention(user_id: str) -> str:
    # Only ids we validated become mentions; anything else is shown escaped.
    return f"<@{user_id}>" if _USER_ID.fullmatch(user_id) else code(user_id, 64)


class PlanView(BaseModel):
    """One action plan as the approver sees it.

    Attributes:
        action: the playbook spelling, ``edr.contain_host``.
        target: the vendor-side id the action takes.
        target_label: what a human recognises (the hostname behind a host id).
        parameters: the plan's arguments.
        sha256: the plan hash the executor will check.
        policy_reason: why policy wants a human for this plan.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str = Field(min_length=1, max_length=100)
    target: str = Field(min_length=1)
    target_label: str
    parameters: dict[str, str | int | bool | None] = Field(default_factory=dict)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    policy_reason: str = ""

    @property
    def short_sha256(self) -> str:
        """The first 12 hex digits, enough to tell plans apart at a glance."""
        return self.sha256[:12]


class ApprovalView(BaseModel):
    """Everything an approval message shows; built by the flow from its approval request.

    Attributes:
        approval_id: the opaque key the buttons carry back.
        incident_id: the incident the plans belong to.
        incident_title: the incident's title (from alert data).
        tenant: the MDR customer.
        requester: who or what asked (a Slack user id becomes a mention).
        evidence: short lines of evidence (from alert data).
        plans: the plans asked about.
        deadline: when silence becomes "expired".
        required_approvals: how many distinct approvers are needed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str = Field(pattern=APPROVAL_ID)
    incident_id: str = Field(min_length=1, max_length=100)
    incident_title: str
    tenant: str = Field(min_length=1, max_length=100)
    requester: str = ""
    evidence: list[str] = Field(default_factory=list)
    plans: list[PlanView] = Field(min_length=1, max_length=MAX_PLANS)
    deadline: AwareDatetime
    required_approvals: int = Field(default=1, ge=1, le=10)


class FinalState(BaseModel):
    """How an approval ended, for the message that replaces the buttons.

    Attributes:
        status: ``approved``, ``denied`` or ``expired``.
        by: Slack user ids of the deciders (empty when expired).
        at: when the decision became final.
        reason: the denier's words (attacker-influenced: shown escaped).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["approved", "denied", "expired"]
    by: list[str] = Field(default_factory=list)
    at: AwareDatetime
    reason: str = ""

    @model_validator(mode="after")
    def _deciders(self) -> FinalState:
        if self.status != "expired" and not self.by:
            raise ValueError(f"a {self.status} decision names who decided")
        return self


def fallback_text(view: ApprovalView) -> str:
    """The notification text (mrkdwn, so escaped) shown where blocks are not."""
    first = view.plans[0]
    more = f" (+{len(view.plans) - 1} more)" if len(view.plans) > 1 else ""
    raw = f"Approval needed for {view.incident_id}: {first.action} on {first.target_label}{more}"
    return escape_clipped(raw, FALLBACK_TEXT_LIMIT)


def _summary_blocks(view: ApprovalView) -> list[JSON]:
    fields = [
        f"*Incident*\n{escape_clipped(view.incident_id, 200)}",
        f"*Tenant*\n{escape_clipped(view.tenant, 200)}",
        f"*Approval*\n{escape_clipped(view.approval_id, 200)}",
        f"*Deadline*\n{_when(view.deadline)}",
        f"*Approvals required*\n{view.required_approvals} distinct",
    ]
    if view.requester:
        fields.append(f"*Requested by*\n{_requester(view.requester)}")
    blocks: list[JSON] = [
        {
            "type": "header",
            "text": plain(f"Approval needed: {view.incident_title}", HEADER_TEXT_LIMIT),
        },
        {"type": "section", "fields": [mrkdwn(f) for f in fields[:MAX_FIELDS]]},
    ]
    if view.evidence:
        lines = [clip(" ".join(line.split()), 300) for line in view.evidence[:MAX_EVIDENCE_LINES]]
        if len(view.evidence) > MAX_EVIDENCE_LINES:
            lines.append(f"{ELLIPSIS} and {len(view.evidence) - MAX_EVIDENCE_LINES} more")
        evidence = "Evidence:\n" + "\n".join(f"• {line}" for line in lines)
        blocks.append({"type": "section", "text": plain(evidence)})
    return blocks


def _requester(requester: str) -> str:
    return _mention(requester) if _USER_ID.fullmatch(requester) else escape_clipped(requester, 200)


def _plan_blocks(plan: PlanView) -> list[JSON]:
    params = " ".join(f"{k}={v}" for k, v in sorted(plan.parameters.items()))
    lines = [
        f"*{escape_clipped(plan.action, 100)}* on {code(plan.target_label, 300)}",
        f"*Target id:* {code(plan.target, 300)}",
    ]
    if params:
        lines.append(f"*Parameters:* {code(params, 1000)}")
    if plan.policy_reason:
        lines.append(f"*Policy:* {escape_clipped(plan.policy_reason, 800)}")
    lines.append(f"*Plan SHA-256:* `{plan.sha256}`")
    return [
        {"type": "section", "text": mrkdwn(clip("\n".join(lines), SECTION_TEXT_LIMIT))},
        {
            "type": "context",
            "elements": [mrkdwn(f"plan `{plan.short_sha256}` · {escape(plan.action)}")],
        },
    ]


def _buttons(view: ApprovalView) -> JSON:
    n = len(view.plans)
    summary = "; ".join(f"{p.action} on {p.target_label}" for p in view.plans)
    return {
        "type": "actions",
        "block_id": f"{BLOCK_ID_PREFIX}{view.approval_id}",
        "elements": [
            {
                "type": "button",
                "action_id": APPROVE_ACTION_ID,
                "text": plain("Approve", 75),
                "style": "primary",
                "value": view.approval_id,
                "confirm": {
                    "title": plain(f"Approve {n} action{'s' if n > 1 else ''}?", 100),
                    "text": plain(summary, CONFIRM_TEXT_LIMIT),
                    "confirm": plain("Approve", 30),
                    "deny": plain("Cancel", 30),
                },
            },
            {
                "type": "button",
                "action_id": DENY_ACTION_ID,
                "text": plain("Deny", 75),
                "style": "danger",
                "value": view.approval_id,
            },
        ],
    }


def _body_blocks(view: ApprovalView) -> list[JSON]:
    blocks = _summary_blocks(view)
    for plan in view.plans:
        blocks.extend(_plan_blocks(plan))
    return blocks


def approval_request(view: ApprovalView) -> tuple[str, list[JSON]]:
    """The message asking for a decision: fallback text and blocks with the two buttons.

    Returns:
        ``(text, blocks)`` for ``chat.postMessage``.
    """
    blocks = [*_body_blocks(view), {"type": "divider"}, _buttons(view)]
    return fallback_text(view), blocks


def final_line(state: FinalState) -> str:
    """One escaped mrkdwn line saying how the approval ended."""
    who = ", ".join(_mention(u) for u in state.by)
    when = _when(state.at)
    if state.status == "approved":
        return f":white_check_mark: *Approved* by {who} at {when}"
    if state.status == "denied":
        reason = f" — {escape_clipped(state.reason, 1000)}" if state.reason else ""
        return f":no_entry: *Denied* by {who} at {when}{reason}"
    return f":hourglass: *Expired* at {when}: no decision before the deadline, nothing was done"


def approval_final(view: ApprovalView, state: FinalState) -> tuple[str, list[JSON]]:
    """The same message with the buttons replaced by who decided and when.

    Returns:
        ``(text, blocks)`` for ``chat.update``.
    """
    line = final_line(state)
    blocks = [*_body_blocks(view), {"type": "divider"}, {"type": "section", "text": mrkdwn(line)}]
    text = escape_clipped(f"{view.incident_id}: {state.status}", FALLBACK_TEXT_LIMIT)
    return text, blocks


def deny_reason_modal(approval_id: str, incident_id: str = "") -> JSON:
    """The ``views.open`` payload that asks a denier why.

    Args:
        approval_id: carried in ``private_metadata`` and returned on submission.
        incident_id: shown to the denier for context.
    """
    if not re.fullmatch(APPROVAL_ID, approval_id):
        raise ValueError("approval id has an unexpected shape")
    context = f"Denying {approval_id}" + (f" for {incident_id}" if incident_id else "")
    return {
        "type": "modal",
        "callback_id": DENY_REASON_CALLBACK_ID,
        "private_metadata": approval_id,
        "title": plain("Deny action", MODAL_TITLE_LIMIT),
        "submit": plain("Deny", MODAL_TITLE_LIMIT),
        "close": plain("Cancel", MODAL_TITLE_LIMIT),
        "blocks": [
            {"type": "section", "text": plain(context)},
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "label": plain("Why deny?", 200),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION_ID,
                    "multiline": True,
                    "min_length": 1,
                    "max_length": REASON_MAX_LENGTH,
                },
            },
        ],
    }


def deny_reason_errors(message: str) -> JSON:
    """The HTTP ack body that keeps the modal open and shows ``message`` under the input."""
    return {"response_action": "errors", "errors": {REASON_BLOCK_ID: clip(message, 200)}}


# Incident summary ----------------------------------------------------------------------

MAX_SUMMARY_ACTIONS = 15
MAX_SUMMARY_IN_EFFECT = 10
SUMMARY_LABEL_LIMIT = 120
"""Labels in the summary are cut shorter than in the approval: it is a digest, not evidence."""

_STATUS_MARKS = {
    "executed": ":white_check_mark:",
    "already_done": ":white_check_mark:",
    "denied": ":no_entry:",
    "forbidden": ":no_entry_sign:",
    "failed": ":x:",
}


class SummaryAction(BaseModel):
    """One action's outcome as the incident summary lists it.

    Attributes:
        action: the playbook spelling, ``edr.contain_host``.
        target_label: what a human recognises (from alert data: shown as inert code).
        status: ``executed``, ``already_done``, ``denied``, ``forbidden``, ``failed`` ...
        approvers: who authorised it (``slack:U…``, ``cli:alice``, ``policy:unattended``).
        sha256: the plan hash, when there is one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str = Field(min_length=1, max_length=100)
    target_label: str
    status: str = Field(pattern=r"^[a-z][a-z_]{0,39}$")
    approvers: list[str] = Field(default_factory=list)
    sha256: str = Field(default="", pattern=r"^(?:[0-9a-f]{64})?$")


class SummaryView(BaseModel):
    """Everything the end-of-incident summary shows, as plain values.

    Attributes:
        incident_id: the incident.
        incident_title: its title (from alert data).
        severity: ``critical``, ``high`` ...
        tenant: the MDR customer.
        actions: what happened to each plan.
        in_effect: actions not yet undone, one line each (from alert data: shown as code).
        time_to_contain: seconds from the first alert to the end of containment; ``None``
            when containment never completed.
        time_to_acknowledge: seconds from the first alert to the first human touch (a
            decision, an assignment, a note).
        report_location: where the full report is (a path or URL, shown as text, never a link).
        ledger_verified: whether the hash-chained ledger verified; ``None`` when not checked.
        ledger_message: the verifier's one-line explanation.
        failed_stages: stages that failed, so a partial response does not read as complete.
        case_status: the case's status (``awaiting-closure`` ...); empty: not shown.
        assignee: who has the case (``slack:U…`` becomes a mention).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident_id: str = Field(min_length=1, max_length=100)
    incident_title: str
    severity: str = Field(min_length=1, max_length=40)
    tenant: str = Field(min_length=1, max_length=100)
    actions: list[SummaryAction] = Field(default_factory=list)
    in_effect: list[str] = Field(default_factory=list)
    time_to_contain: float | None = None
    time_to_acknowledge: float | None = None
    report_location: str = ""
    ledger_verified: bool | None = None
    ledger_message: str = ""
    failed_stages: list[str] = Field(default_factory=list)
    case_status: str = Field(default="", pattern=r"^(?:[a-z][a-z-]{0,39})?$")
    assignee: str = ""


def duration(seconds: float | None) -> str:
    """``42s``, ``4m 12s``, ``2h 05m``, ``3d 4h``; an em dash for a clock never reached."""
    if seconds is None:
        return "—"
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def _bullets(lines: list[str], *, cap: int, total: int, limit: int = SECTION_TEXT_LIMIT) -> str:
    """Whole lines as a bulleted list that fits ``limit``; what did not fit is counted."""
    out: list[str] = []
    used = 0
    # Room for the "and N more" line, so adding it never breaks the limit.
    budget = limit - 60
    for line in lines[:cap]:
        bullet = f"• {line}"
        if used + len(bullet) + 1 > budget:
            break
        out.append(bullet)
        used += len(bullet) + 1
    if len(out) < total:
        out.append(f"{ELLIPSIS} and {total - len(out)} more in the report")
    return "\n".join(out)


def _action_line(action: SummaryAction) -> str:
    mark = _STATUS_MARKS.get(action.status, ":grey_question:")
    # The status is [a-z_] only; spaces instead of "_" so mrkdwn cannot read italics.
    parts = [
        f"{mark} {code(action.action, 100)} on {code(action.target_label, SUMMARY_LABEL_LIMIT)}"
        f" — {action.status.replace('_', ' ')}"
    ]
    if action.approvers:
        parts.append("by " + ", ".join(code(a, 64) for a in action.approvers[:5]))
    if action.sha256:
        parts.append(f"plan `{action.sha256[:12]}`")
    return " · ".join(parts)


def _ledger_line(view: SummaryView) -> str:
    detail = f": {code(view.ledger_message, 300)}" if view.ledger_message else ""
    if view.ledger_verified is None:
        return f":grey_question: Ledger not checked{detail}"
    if view.ledger_verified:
        return f":white_check_mark: Ledger verified{detail}"
    return f":warning: *Ledger NOT verified*{detail}"


def _owner(assignee: str) -> str:
    # A Slack assignee is mentioned (a validated id only); anyone else is inert code.
    slack_id = assignee.removeprefix("slack:")
    return _mention(slack_id) if _USER_ID.fullmatch(slack_id) else code(assignee, 64)


def summary_fallback_text(view: SummaryView) -> str:
    """The notification text: counts only, so no alert text reaches a notification."""
    failed = f"; failed stages: {', '.join(view.failed_stages)}" if view.failed_stages else ""
    raw = (
        f"{view.incident_id} summary: {len(view.actions)} action(s), "
        f"{len(view.in_effect)} still in effect{failed}"
    )
    return escape_clipped(raw, FALLBACK_TEXT_LIMIT)


def incident_summary(view: SummaryView) -> tuple[str, list[JSON]]:
    """The end-of-incident summary: a header, the key facts, a compact list of actions.

    Alert-derived strings appear as ``plain_text`` (the title) or as escaped code spans in
    verbatim ``mrkdwn``, so neither mentions, links nor formatting survive.

    Returns:
        ``(text, blocks)`` for ``chat.postMessage``.
    """
    fields = [
        f"*Incident*\n{code(view.incident_id, 100)}",
        f"*Severity*\n{code(view.severity, 40)}",
        f"*Tenant*\n{code(view.tenant, 100)}",
        f"*Time to contain*\n{duration(view.time_to_contain)}",
    ]
    if view.time_to_acknowledge is not None:
        fields.append(f"*Time to acknowledge*\n{duration(view.time_to_acknowledge)}")
    if view.case_status:
        owner = f" · {_owner(view.assignee)}" if view.assignee else ""
        fields.append(f"*Case*\n{code(view.case_status, 40)}{owner}")
    if view.failed_stages:
        stages = ", ".join(code(s, 40) for s in view.failed_stages)
        fields.append(f":warning: *Failed stages*\n{stages}")
    if view.actions:
        actions = _bullets(
            [_action_line(a) for a in view.actions],
            cap=MAX_SUMMARY_ACTIONS,
            total=len(view.actions),
            limit=SECTION_TEXT_LIMIT - len("*Actions*\n"),
        )
        actions_text = f"*Actions*\n{actions}"
    else:
        actions_text = "*Actions*\nNone were planned."
    if view.in_effect:
        lines = [code(line, SUMMARY_LABEL_LIMIT) for line in view.in_effect]
        still = _bullets(
            lines,
            cap=MAX_SUMMARY_IN_EFFECT,
            total=len(view.in_effect),
            limit=SECTION_TEXT_LIMIT - len("*Still in effect*\n"),
        )
        in_effect_text = f"*Still in effect*\n{still}"
    else:
        in_effect_text = "*Still in effect*\nNothing stanch did is still in effect."
    context = [mrkdwn(_ledger_line(view))]
    if view.report_location:
        # A code span, and verbatim: Slack neither links nor unfurls the location.
        context.insert(0, mrkdwn(f"Report: {code(view.report_location, 500)}"))
    blocks: list[JSON] = [
        {
            "type": "header",
            "text": plain(f"Incident summary: {view.incident_title}", HEADER_TEXT_LIMIT),
        },
        {"type": "section", "fields": [mrkdwn(f) for f in fields[:MAX_FIELDS]]},
        {"type": "section", "text": mrkdwn(actions_text)},
        {"type": "section", "text": mrkdwn(in_effect_text)},
        {"type": "context", "elements": context},
    ]
    return summary_fallback_text(view), blocks
