"""What the incident report says, in a customer's words: the executive summary, each
stage's result, who decided, times and durations a person reads.

Pure functions of the :class:`~flows.models.IncidentOutcome`; the templates only lay them
out. Every string may hold alert text, so the templates escape all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flows.models import ActionResult, ActionStatus, IncidentOutcome, Stage
from flows.record.entries import InEffect
from integrations.phrases import describe_action, duration_words, vendor_name

DONE = (ActionStatus.EXECUTED, ActionStatus.ALREADY_DONE)

_NEXT_STEPS: dict[str, str] = {
    "contain_host": "Check or reimage {label} before it is released from isolation "
    "(`stanch undo {incident}` releases what stanch still has in effect).",
    "suspend_user": "Reset {label}'s credentials with them and review their recent "
    "activity before the account is unsuspended.",
    "revoke_sessions": "Have {label} sign in again and confirm the new sign-ins are theirs.",
    "block_ip": "Review other traffic to {label}; the block lifts by itself when it expires.",
    "block_hash": "Look for {label} on machines outside the EDR's reach.",
    "expire_password": "Make sure {label} sets the new password through a trusted channel.",
}


def when(at: datetime | str | None) -> str:
    """``2026-11-22 14:03:12 UTC``: to the second, with the time zone; ``—`` for none."""
    if at is None or at == "":
        return "—"
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the store writes UTC; SQLite drops the zone
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def who(approver: str) -> str:
    """``slack:U0ALICE`` → ``U0ALICE (Slack)``; ``policy:unattended`` → ``policy (unattended)``."""
    channel, _, identity = approver.partition(":")
    if not identity:
        return approver
    if channel == "policy":
        return f"policy ({identity})"
    return f"{identity} ({vendor_name(channel) if channel == 'slack' else channel})"


def action_line(result: ActionResult) -> str:
    """``Isolate host WS-0042 (CrowdStrike)``."""
    return describe_action(result.plan.action, result.plan.target_label, result.vendor or "")


def decided_by(result: ActionResult) -> str:
    """Who let the action run, or who refused it and why, in words."""
    if result.status in DONE or result.status == ActionStatus.FAILED:
        return ", ".join(who(a) for a in result.approved_by) or "—"
    return result.error or result.status.value


@dataclass(frozen=True)
class StageLine:
    """One row of the timeline: the stage's outcome as a person reads it."""

    stage: str
    label: str
    css: str
    started: str
    finished: str
    took: str
    note: str


def _contain_label(actions: list[ActionResult]) -> tuple[str, str] | None:
    contain = [a for a in actions if a.plan.stage == Stage.CONTAIN]
    if not contain or any(a.status in DONE for a in contain):
        return None
    if any(a.status == ActionStatus.DENIED for a in contain):
        return "nothing contained (denied)", "denied"
    if any(a.status == ActionStatus.FORBIDDEN for a in contain):
        return "nothing contained (forbidden by policy)", "forbidden"
    return "nothing contained", "failed"


def stage_lines(outcome: IncidentOutcome) -> list[StageLine]:
    """The timeline: a contain stage that contained nothing says so instead of 'completed'."""
    lines: list[StageLine] = []
    for record in outcome.stages:
        label: str = record.state
        css: str = record.state
        if record.stage == Stage.CONTAIN and record.state == "completed":
            label, css = _contain_label(outcome.actions) or (label, css)
        if record.state == "skipped":
            label = "not run"
        took = (record.finished_at - record.started_at).total_seconds()
        lines.append(
            StageLine(
                stage=record.stage.value,
                label=label,
                css=css,
                started=when(record.started_at),
                finished=when(record.finished_at),
                took=duration_words(took),
                note=record.note,
            )
        )
    return lines


@dataclass
class ExecutiveSummary:
    """The first thing a customer reads.

    Attributes:
        happened: what was seen, and the verdict.
        done: what stanch did (and did not do, and why).
        in_effect: what is still in effect, and until when.
        next_steps: what the customer should do now.
    """

    happened: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    in_effect: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def _stopped(outcome: IncidentOutcome) -> dict[str, Any] | None:
    return next((d for d in outcome.decisions if d.get("stop_response")), None)


def executive_summary(outcome: IncidentOutcome) -> ExecutiveSummary:
    """What happened, what was done, what is still in effect, what to do next."""
    incident, found = outcome.incident, outcome.investigation
    summary = ExecutiveSummary()
    sources = sorted({a.vendor for a in incident.alerts})
    first = min(a.occurred_at for a in incident.alerts)
    last = max(a.occurred_at for a in incident.alerts)
    span = f"at {when(first)}" if first == last else f"between {when(first)} and {when(last)}"
    summary.happened.append(
        f"{len(incident.alerts)} alert(s) from {', '.join(sources)} {span}: {incident.title}."
    )
    summary.happened.append(
        f"Severity {incident.severity.name.lower()}; verdict "
        f"{found.verdict.replace('_', ' ')} with a risk score of {found.risk_score}/100."
    )
    done = [a for a in outcome.actions if a.status in DONE]
    refused = [a for a in outcome.actions if a.status not in DONE]
    summary.done.extend(f"{action_line(a)} — done." for a in done)
    summary.done.extend(f"{action_line(a)} — not done: {decided_by(a)}." for a in refused)
    if not outcome.actions:
        summary.done.append("No action was needed.")
    stop = _stopped(outcome)
    if stop is not None:
        by = ", ".join(who(a) for a in stop.get("approvers", [])) or "an analyst"
        summary.done.append(
            f"The response was stopped: {by} judged this a false positive "
            f"(“{stop.get('reason', '')}”). Nothing further was run."
        )
    summary.done.extend(f"Warning: {w}." for w in outcome.warnings)
    failed = [s.stage.value for s in outcome.stages if s.state == "failed"]
    if failed:
        summary.done.append(f"Stage(s) {', '.join(failed)} failed; the SOC is following up.")
    summary.in_effect = list(outcome.in_effect) or ["Nothing stanch did is still in effect."]
    if stop is not None:
        summary.next_steps.append(
            "Confirm the false positive; the incident awaits closure. Nothing was changed."
        )
    for action in done:
        step = _NEXT_STEPS.get(action.plan.verb)
        if step is not None:
            summary.next_steps.append(
                step.format(label=action.plan.target_label, incident=incident.id)
            )
    if any(a.status == ActionStatus.DENIED for a in refused) and stop is None:
        summary.next_steps.append(
            "Some containment was denied: watch the named hosts and users for further activity."
        )
    if not summary.next_steps:
        summary.next_steps.append("Nothing is needed from you.")
    return summary


def in_effect_line(effect: InEffect) -> str:
    """``Block IP 203.0.113.66 (FortiGate) until 2026-11-23 14:05:00 UTC``, or until undone."""
    entry = effect.entry
    action = f"{entry.capability}.{entry.verb}"
    line = describe_action(action, entry.target_label or entry.target or "", entry.vendor or "")
    ttl = entry.parameters.get("ttl_seconds")
    if isinstance(ttl, int) and ttl > 0:
        until = entry.recorded_at.timestamp() + ttl
        return f"{line} until {when(datetime.fromtimestamp(until, tz=UTC))} (then lifted)"
    return f"{line}, until undone (`stanch undo {entry.incident_id}`)"


@dataclass(frozen=True)
class DecisionLine:
    """One approval decision as the report lists it."""

    approval_id: str
    status: str
    by: str
    at: str
    reason: str


def decision_lines(outcome: IncidentOutcome) -> list[DecisionLine]:
    """Each decision: who, when (to the second, UTC), what, and their words."""
    lines: list[DecisionLine] = []
    for d in outcome.decisions:
        status = str(d.get("status", ""))
        if d.get("stop_response"):
            status = "denied as a false positive (response stopped)"
        elif status == "partial":
            status = f"partly approved ({len(d.get('approved', []))} plan(s))"
        lines.append(
            DecisionLine(
                approval_id=str(d.get("approval_id", "")),
                status=status,
                by=", ".join(who(str(a)) for a in d.get("approvers", [])) or "nobody",
                at=when(d.get("decided_at")),
                reason=str(d.get("reason", "")),
            )
        )
    return lines


def clock_words(clocks: dict[str, float | None]) -> dict[str, str]:
    """Each clock as ``4 m 12 s`` (``—`` for one never reached)."""
    return {name: duration_words(value) for name, value in clocks.items()}
