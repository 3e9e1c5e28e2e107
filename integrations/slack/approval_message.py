"""The approval message: evidence first, one line per action, then the decision controls.

Alert data is attacker-controlled. It reaches Slack only as ``plain_text`` or as ``mrkdwn``
escaped with :func:`~integrations.slack.messages.escape` and marked ``verbatim``. The only
``<…>`` sequences emitted are mentions of validated user ids and the link to the Prefect
flow run, whose address comes from stanch's configuration and is checked before use.

The controls: *Approve all*; with several plans and one approver, per-plan checkboxes and
*Approve selected* (the signed decision names exactly the ticked plans); *Deny* (these
actions only, the response goes on); *Deny (false positive — stop)* (nothing more runs for
the incident, which is marked for closure as a false positive).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from integrations.phrases import action_phrase, describe_action, duration_words, vendor_name
from integrations.slack.messages import (
    CONFIRM_TEXT_LIMIT,
    ELLIPSIS,
    FALLBACK_TEXT_LIMIT,
    FIELD_TEXT_LIMIT,
    HEADER_TEXT_LIMIT,
    MAX_FIELDS,
    MODAL_TITLE_LIMIT,
    SAFE_URL,
    SECTION_TEXT_LIMIT,
    USER_ID,
    clip,
    code,
    escape_clipped,
    mention,
    mrkdwn,
    plain,
)

APPROVE_ACTION_ID = "stanch_approve"
APPROVE_SELECTED_ACTION_ID = "stanch_approve_selected"
DENY_ACTION_ID = "stanch_deny"
DENY_STOP_ACTION_ID = "stanch_deny_stop"
SELECT_ACTION_ID = "stanch_select"
DENY_REASON_CALLBACK_ID = "stanch_deny_reason"
DENY_STOP_CALLBACK_ID = "stanch_deny_stop_reason"
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "value"
BLOCK_ID_PREFIX = "stanch_approval:"
SELECT_BLOCK_PREFIX = "stanch_select:"

REASON_MAX_LENGTH = 500
MAX_PLANS = 20
"""A request asks about at most 20 plans: two checkbox groups and one line each."""
CHECKBOX_OPTIONS_LIMIT = 10
"""Slack's documented maximum of options in one checkboxes element."""
OPTION_TEXT_LIMIT = 75
MAX_EVIDENCE_LINES = 15

SLACK_ID = r"^[A-Z0-9]{2,32}$"
APPROVAL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
SHA256 = r"^[0-9a-f]{64}$"

JSON = dict[str, Any]


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class PlanView(BaseModel):
    """One action plan as the approver sees it.

    Attributes:
        action: the playbook spelling, ``edr.contain_host``.
        target: the vendor-side id the action takes.
        target_label: what a human recognises (the hostname behind a host id).
        vendor: who carries it out (``crowdstrike``), shown as the product's name.
        parameters: the plan's arguments.
        sha256: the plan hash the executor will check.
        policy_reason: why policy wants a human for this plan.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str = Field(min_length=1, max_length=100)
    target: str = Field(min_length=1)
    target_label: str
    vendor: str = ""
    parameters: dict[str, str | int | bool | None] = Field(default_factory=dict)
    sha256: str = Field(pattern=SHA256)
    policy_reason: str = ""

    @property
    def short_sha256(self) -> str:
        """The first 12 hex digits, enough to tell plans apart at a glance."""
        return self.sha256[:12]

    @property
    def line(self) -> str:
        """``Isolate host WS-0042 (CrowdStrike)``, unescaped (alert data: escape to show)."""
        return describe_action(self.action, self.target_label, self.vendor)


class ApprovalView(BaseModel):
    """Everything an approval message shows; built by the flow from its approval request.

    Attributes:
        approval_id: the opaque key the buttons carry back.
        incident_id: the incident the plans belong to.
        incident_title: the incident's title (from alert data).
        tenant: the MDR customer.
        severity: the incident's severity word (``critical``).
        verdict: the investigation's verdict (``true_positive``).
        risk_score: the investigation's score out of 100.
        requester: who or what asked (a Slack user id becomes a mention).
        evidence: what was seen, where and when, one line each (from alert data).
        techniques: ATT&CK techniques, ``T1486 Data Encrypted for Impact``.
        hunt: the "Hunt" section: per indicator, how many hosts of the fleet saw it and
            which (host names come from the EDR: shown as plain text, never parsed).
        intel: threat intel, one line per indicator and service, worst first (vendor
            data: attacker-influenced, shown as plain text like alert data).
        plans: the plans asked about.
        deadline: when silence takes effect.
        on_timeout: what silence means.
        required_approvals: how many distinct approvers are needed.
        flow_run_url: the Prefect UI page of the run that waits (configuration, not alert
            data); its Artifacts tab holds the report once written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str = Field(pattern=APPROVAL_ID)
    incident_id: str = Field(min_length=1, max_length=100)
    incident_title: str
    tenant: str = Field(min_length=1, max_length=100)
    severity: str = Field(default="", max_length=40)
    verdict: str = Field(default="", max_length=40)
    risk_score: int | None = Field(default=None, ge=0, le=100)
    requester: str = ""
    evidence: list[str] = Field(default_factory=list)
    techniques: list[str] = Field(default_factory=list)
    hunt: list[str] = Field(default_factory=list)
    intel: list[str] = Field(default_factory=list)
    plans: list[PlanView] = Field(min_length=1, max_length=MAX_PLANS)
    deadline: AwareDatetime
    on_timeout: Literal["deny", "approve"] = "deny"
    required_approvals: int = Field(default=1, ge=1, le=10)
    # Built from configuration, never from alert data; it still cannot close <url|text>.
    flow_run_url: str = Field(default="", pattern=SAFE_URL)

    @property
    def selectable(self) -> bool:
        """Whether plans can be approved one by one: several plans, one approver.

        Under the two-person rule every approver approves the same set, so there the
        message offers all or nothing.
        """
        return len(self.plans) > 1 and self.required_approvals == 1


class FinalState(BaseModel):
    """How an approval ended, for the message that replaces the controls.

    Attributes:
        status: ``approved``, ``partial``, ``denied`` or ``expired``.
        by: Slack user ids of the deciders (empty when expired).
        at: when the decision became final.
        reason: the denier's words (attacker-influenced: shown escaped).
        approved: for ``partial``, the hashes approved (the others were denied).
        stopped: the denial was a false positive that stopped the response.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["approved", "partial", "denied", "expired"]
    by: list[str] = Field(default_factory=list)
    at: AwareDatetime
    reason: str = ""
    approved: list[str] = Field(default_factory=list)
    stopped: bool = False

    @model_validator(mode="after")
    def _deciders(self) -> FinalState:
        if self.status != "expired" and not self.by:
            raise ValueError(f"a {self.status} decision names who decided")
        if self.status == "partial" and not self.approved:
            raise ValueError("a partial approval names the plans approved")
        if self.stopped and self.status != "denied":
            raise ValueError("only a denial stops the response")
        return self


def fallback_text(view: ApprovalView) -> str:
    """The notification text (mrkdwn, so escaped) shown where blocks are not."""
    first = view.plans[0]
    more = f" (+{len(view.plans) - 1} more)" if len(view.plans) > 1 else ""
    raw = f"Approval needed for {view.incident_id}: {first.line}{more}"
    return escape_clipped(raw, FALLBACK_TEXT_LIMIT)


def _requester(requester: str) -> str:
    if USER_ID.fullmatch(requester):
        return mention(requester)
    if requester.startswith("stanch:"):
        # The flow itself asked: say so in words rather than as an internal id.
        return f"stanch (automated response, {escape_clipped(requester[7:], 100)})"
    return escape_clipped(requester, 200)


def _verdict(view: ApprovalView) -> str:
    words = view.verdict.replace("_", " ") or "not assessed"
    risk = f" · risk {view.risk_score}/100" if view.risk_score is not None else ""
    return escape_clipped(words, 60) + risk


def _fact_fields(view: ApprovalView) -> list[str]:
    fields = [
        f"*Severity*\n{escape_clipped(view.severity.capitalize() or 'unknown', 40)}",
        f"*Verdict*\n{_verdict(view)}",
        f"*Tenant*\n{escape_clipped(view.tenant, 200)}",
        f"*Incident*\n{escape_clipped(view.incident_id, 200)}",
        f"*Decide by*\n{_when(view.deadline)}",
    ]
    if view.required_approvals > 1:
        fields.append(f"*Approvals required*\n{view.required_approvals} distinct people")
    if view.requester:
        fields.append(f"*Requested by*\n{_requester(view.requester)}")
    return [clip(f, FIELD_TEXT_LIMIT) for f in fields[:MAX_FIELDS]]


def _evidence_text(view: ApprovalView) -> str:
    """What was seen, as plain text: alert data is never parsed by Slack here."""
    lines = [clip(" ".join(line.split()), 300) for line in view.evidence[:MAX_EVIDENCE_LINES]]
    if len(view.evidence) > MAX_EVIDENCE_LINES:
        lines.append(f"{ELLIPSIS} and {len(view.evidence) - MAX_EVIDENCE_LINES} more")
    if view.techniques:
        lines.append("ATT&CK: " + " · ".join(" ".join(t.split()) for t in view.techniques))
    if not lines:
        lines.append("No alert detail was recorded with this request.")
    return "What was seen:\n" + "\n".join(f"• {line}" for line in lines)


def _hunt_text(view: ApprovalView) -> str:
    """The "Hunt" section as plain text: which hosts the indicators were seen on."""
    lines = [clip(" ".join(line.split()), 300) for line in view.hunt[:MAX_EVIDENCE_LINES]]
    if len(view.hunt) > MAX_EVIDENCE_LINES:
        lines.append(f"{ELLIPSIS} and {len(view.hunt) - MAX_EVIDENCE_LINES} more")
    return "Hunt across the fleet:\n" + "\n".join(f"• {line}" for line in lines)


MAX_INTEL_LINES = 8


def _threat_intel_blocks(view: ApprovalView) -> list[JSON]:
    """Threat intel, as plain text: a family name is whatever the malware calls itself."""
    if not view.intel:
        return []
    lines = [clip(" ".join(line.split()), 450) for line in view.intel[:MAX_INTEL_LINES]]
    if len(view.intel) > MAX_INTEL_LINES:
        lines.append(f"{ELLIPSIS} and {len(view.intel) - MAX_INTEL_LINES} more")
    text = "Threat intel:\n" + "\n".join(f"• {line}" for line in lines)
    return [{"type": "section", "text": plain(clip(text, SECTION_TEXT_LIMIT))}]


def _plan_words(plan: PlanView, label_limit: int = 200) -> str:
    """``Isolate host `WS-0042` (CrowdStrike)`` as mrkdwn: the label an inert code span."""
    phrase = escape_clipped(action_phrase(plan.action), 60)
    vendor = f" ({escape_clipped(vendor_name(plan.vendor), 40)})" if plan.vendor else ""
    return f"{phrase} {code(plan.target_label, label_limit)}{vendor}"


def _plan_line(plan: PlanView) -> str:
    shown = {k: v for k, v in sorted(plan.parameters.items()) if k != "reason" and v is not None}
    ttl = shown.pop("ttl_seconds", None)
    # A block's lifetime reads as a duration; anything else is shown as it is planned.
    lasts = f" for {duration_words(ttl)}" if isinstance(ttl, int) and ttl > 0 else ""
    params = " " + code(" ".join(f"{k}={v}" for k, v in shown.items()), 200) if shown else ""
    return f"• {_plan_words(plan)}{lasts}{params} · plan `{plan.short_sha256}`"


def _plan_blocks(view: ApprovalView) -> list[JSON]:
    n = len(view.plans)
    heading = f"*Asked to approve ({n} action{'s' if n > 1 else ''})*"
    # Whole lines only: a cut could end inside an entity or leave a code span open.
    sections = _packed(heading, [_plan_line(p) for p in view.plans], SECTION_TEXT_LIMIT)
    blocks: list[JSON] = [{"type": "section", "text": mrkdwn(t)} for t in sections]
    reasons = list(dict.fromkeys(p.policy_reason for p in view.plans if p.policy_reason))
    if reasons:
        why = escape_clipped(" · ".join(reasons), SECTION_TEXT_LIMIT - 40)
        blocks.append({"type": "context", "elements": [mrkdwn(f"Why a person decides: {why}")]})
    hashes = [f"`{p.sha256}` {_plan_words(p, 100)}" for p in view.plans]
    blocks.append(
        {"type": "context", "elements": [mrkdwn(t) for t in _packed("Plan SHA-256:", hashes)]}
    )
    return blocks


def _packed(title: str, lines: list[str], limit: int = 1500) -> list[str]:
    """Whole lines packed into as few context texts as fit ``limit`` each (never cut)."""
    texts: list[str] = []
    current = title
    for line in lines:
        if len(current) + 1 + len(line) > limit:
            texts.append(current)
            current = line
        else:
            current = f"{current}\n{line}"
    texts.append(current)
    return texts


def _checkboxes(view: ApprovalView) -> list[JSON]:
    """Per-plan checkboxes, all ticked: untick what you do not approve."""
    blocks: list[JSON] = []
    for start in range(0, len(view.plans), CHECKBOX_OPTIONS_LIMIT):
        group = view.plans[start : start + CHECKBOX_OPTIONS_LIMIT]
        options = [
            {
                "text": plain(f"{p.line} · {p.short_sha256}", OPTION_TEXT_LIMIT),
                "value": p.sha256,
            }
            for p in group
        ]
        blocks.append(
            {
                "type": "actions",
                "block_id": f"{SELECT_BLOCK_PREFIX}{view.approval_id}:{start // 10}",
                "elements": [
                    {
                        "type": "checkboxes",
                        "action_id": SELECT_ACTION_ID,
                        "options": options,
                        "initial_options": options,
                    }
                ],
            }
        )
    return blocks


def _confirm(title: str, text: str, yes: str) -> JSON:
    return {
        "title": plain(title, 100),
        "text": plain(text, CONFIRM_TEXT_LIMIT),
        "confirm": plain(yes, 30),
        "deny": plain("Cancel", 30),
    }


def _buttons(view: ApprovalView) -> JSON:
    n = len(view.plans)
    everything = "; ".join(p.line for p in view.plans)
    approve_all = "Approve all" if n > 1 else "Approve"
    elements: list[JSON] = [
        {
            "type": "button",
            "action_id": APPROVE_ACTION_ID,
            "text": plain(approve_all, 75),
            "style": "primary",
            "value": view.approval_id,
            "confirm": _confirm(
                f"Approve {n} action{'s' if n > 1 else ''}?", everything, "Approve"
            ),
        }
    ]
    if view.selectable:
        elements.append(
            {
                "type": "button",
                "action_id": APPROVE_SELECTED_ACTION_ID,
                "text": plain("Approve selected", 75),
                "value": view.approval_id,
            }
        )
    elements.extend(
        [
            {
                "type": "button",
                "action_id": DENY_ACTION_ID,
                "text": plain("Deny this action" if n == 1 else "Deny these actions", 75),
                "value": view.approval_id,
            },
            {
                "type": "button",
                "action_id": DENY_STOP_ACTION_ID,
                "text": plain("Deny (false positive — stop)", 75),
                "style": "danger",
                "value": view.approval_id,
                "confirm": _confirm(
                    "Stop the whole response?",
                    "Nothing more runs for this incident (no remediation either), and it is "
                    "marked for closure as a false positive. You will be asked why.",
                    "Stop",
                ),
            },
        ]
    )
    return {
        "type": "actions",
        "block_id": f"{BLOCK_ID_PREFIX}{view.approval_id}",
        "elements": elements,
    }


def _what_buttons_do(view: ApprovalView) -> JSON:
    silence = (
        "deny: nothing is done"
        if view.on_timeout == "deny"
        else "approve, as this tenant's policy says"
    )
    lines = [
        "*Deny* refuses these actions; the rest of the response goes on. "
        "*Deny (false positive — stop)* refuses them and stops the response: nothing more "
        "runs for this incident, and it is marked for closure as a false positive.",
        f"No decision by {_when(view.deadline)} means {silence}.",
    ]
    if view.selectable:
        lines.insert(0, "Untick the actions you do not approve, then *Approve selected*.")
    if view.flow_run_url:
        lines.append(
            f"<{view.flow_run_url}|Open the flow run in Prefect> (report on its Artifacts tab)"
        )
    return {"type": "context", "elements": [mrkdwn(clip("\n".join(lines), SECTION_TEXT_LIMIT))]}


def _body_blocks(view: ApprovalView) -> list[JSON]:
    return [
        {
            "type": "header",
            "text": plain(f"Approval needed: {view.incident_title}", HEADER_TEXT_LIMIT),
        },
        {"type": "section", "fields": [mrkdwn(f) for f in _fact_fields(view)]},
        {"type": "section", "text": plain(_evidence_text(view))},
        *([{"type": "section", "text": plain(_hunt_text(view))}] if view.hunt else []),
        *_threat_intel_blocks(view),
        *_plan_blocks(view),
    ]


def approval_request(view: ApprovalView) -> tuple[str, list[JSON]]:
    """The message asking for a decision: fallback text, evidence, plans and controls.

    Returns:
        ``(text, blocks)`` for ``chat.postMessage``.
    """
    controls = [*(_checkboxes(view) if view.selectable else []), _buttons(view)]
    blocks = [*_body_blocks(view), {"type": "divider"}, *controls, _what_buttons_do(view)]
    return fallback_text(view), blocks


def final_line(state: FinalState, view: ApprovalView | None = None) -> str:
    """One escaped mrkdwn line saying how the approval ended."""
    who = ", ".join(mention(u) for u in state.by)
    when = _when(state.at)
    reason = f" — {escape_clipped(state.reason, 1000)}" if state.reason else ""
    if state.status == "approved":
        return f":white_check_mark: *Approved* by {who} at {when}"
    if state.status == "partial":
        plans = view.plans if view is not None else []
        kept = [p for p in plans if p.sha256 in state.approved]
        refused = [p for p in plans if p.sha256 not in state.approved]
        names = ", ".join(_plan_words(p, 100) for p in kept) or f"{len(state.approved)}"
        denied = ", ".join(_plan_words(p, 100) for p in refused)
        tail = f"; denied: {denied}" if denied else ""
        return (
            f":ballot_box_with_check: *Approved {len(state.approved)} of "
            f"{len(plans) or len(state.approved)}* by {who} at {when}: {names}{tail}"
        )
    if state.status == "denied" and state.stopped:
        return (
            f":octagonal_sign: *Denied as a false positive — response stopped* by {who} at "
            f"{when}{reason}. Nothing more runs; the incident is marked for closure."
        )
    if state.status == "denied":
        return f":no_entry: *Denied* by {who} at {when}{reason}"
    return f":hourglass: *Expired* at {when}: no decision before the deadline, nothing was done"


def approval_final(view: ApprovalView, state: FinalState) -> tuple[str, list[JSON]]:
    """The same message with the controls replaced by who decided and when.

    Returns:
        ``(text, blocks)`` for ``chat.update``.
    """
    line = final_line(state, view)
    blocks = [*_body_blocks(view), {"type": "divider"}, {"type": "section", "text": mrkdwn(line)}]
    status = "stopped (false positive)" if state.stopped else state.status
    text = escape_clipped(f"{view.incident_id}: {status}", FALLBACK_TEXT_LIMIT)
    return text, blocks


def deny_reason_modal(approval_id: str, incident_id: str = "", *, stop: bool = False) -> JSON:
    """The ``views.open`` payload that asks a denier why.

    Args:
        approval_id: carried in ``private_metadata`` and returned on submission.
        incident_id: shown to the denier for context.
        stop: the false-positive denial that stops the response (its own callback id).
    """
    if not re.fullmatch(APPROVAL_ID, approval_id):
        raise ValueError("approval id has an unexpected shape")
    subject = f"{approval_id}" + (f" for {incident_id}" if incident_id else "")
    if stop:
        context = (
            f"Denying {subject} as a false positive. Nothing more will run for this incident, "
            "and it will be marked for closure as a false positive."
        )
        label = "Why is it a false positive?"
    else:
        context = f"Denying {subject}. The rest of the response goes on."
        label = "Why deny?"
    return {
        "type": "modal",
        "callback_id": DENY_STOP_CALLBACK_ID if stop else DENY_REASON_CALLBACK_ID,
        "private_metadata": approval_id,
        "title": plain("Stop: false positive" if stop else "Deny action", MODAL_TITLE_LIMIT),
        "submit": plain("Stop" if stop else "Deny", MODAL_TITLE_LIMIT),
        "close": plain("Cancel", MODAL_TITLE_LIMIT),
        "blocks": [
            {"type": "section", "text": plain(context)},
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "label": plain(label, 200),
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
