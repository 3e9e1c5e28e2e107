"""Block Kit primitives (escaping, clipping, text objects, limits) and the incident summary.

Alert data is attacker-controlled. It only ever reaches Slack as ``plain_text`` or as
``mrkdwn`` escaped with :func:`escape` and marked ``verbatim``; no ``url`` field is built
from it. The only ``<…>`` control sequences emitted are mentions of validated user ids and
links whose address comes from stanch's configuration. The approval message is in
:mod:`integrations.slack.approval_message`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from integrations.phrases import duration_words

# Slack's documented Block Kit limits.
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
HEADER_TEXT_LIMIT = 150
CONFIRM_TEXT_LIMIT = 300
MODAL_TITLE_LIMIT = 24
MAX_BLOCKS = 50
FALLBACK_TEXT_LIMIT = 3000

ELLIPSIS = "…"
# U+02CB looks like a backtick but cannot close a code span.
_BACKTICK_STANDIN = "\u02cb"
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})

USER_ID = re.compile(r"[UW][A-Z0-9]{2,31}")
"""A Slack user id; only these ever become mentions."""
SAFE_URL = r"^(?:https?://[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]{1,1500})?$"
"""A link address stanch builds from its configuration; it cannot close ``<url|text>``."""

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


def mention(user_id: str) -> str:
    """A mention of a validated Slack user id; anything else is shown escaped in a code span."""
    return f"<@{user_id}>" if USER_ID.fullmatch(user_id) else code(user_id, 64)


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
        report_location: where the report file is on the stanch host (shown as text, never
            a link), for when there is no ``report_url``.
        report_url: the report's page in the Prefect UI (configuration plus an artifact id,
            never alert data), shown as a link.
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
    report_url: str = Field(default="", pattern=SAFE_URL)
    ledger_verified: bool | None = None
    ledger_message: str = ""
    failed_stages: list[str] = Field(default_factory=list)
    case_status: str = Field(default="", pattern=r"^(?:[a-z][a-z-]{0,39})?$")
    assignee: str = ""


def duration(seconds: float | None) -> str:
    """``42 s``, ``4 m 12 s``, ``2 h 05 m``, ``3 d 4 h``; an em dash for a clock never reached."""
    return duration_words(seconds)


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
        parts.append("by " + ", ".join(approver(a) for a in action.approvers[:5]))
    if action.sha256:
        parts.append(f"plan `{action.sha256[:12]}`")
    return " · ".join(parts)


def approver(who: str) -> str:
    """``slack:U0ALICE`` as a mention, ``cli:alice@soc-1`` and the rest as inert text.

    The record keeps ``channel:identity``; a person reads the Slack user, not the code.
    """
    channel, _, identity = who.partition(":")
    if channel == "slack" and USER_ID.fullmatch(identity):
        return mention(identity)
    if channel == "policy":
        return f"policy ({escape_clipped(identity, 40)})"
    if channel and identity:
        return f"{code(identity, 64)} ({escape_clipped(channel, 30)})"
    return code(who, 64)


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
    return mention(slack_id) if USER_ID.fullmatch(slack_id) else code(assignee, 64)


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
    if view.report_url:
        context.insert(0, mrkdwn(f"<{view.report_url}|Open the report in Prefect>"))
    elif view.report_location:
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
