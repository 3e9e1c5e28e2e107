"""What falls due with time on open cases: SLA warnings and breaches, and idle auto-close.

Run by the ``sweep`` flow with the time it judges by (``now``), so a test advances the
clock instead of sleeping. Each warning and breach is recorded once per incident and
clock (a unique row in ``sla_events``) before it is announced in Slack, so a sweep that
runs twice, or in two replicas, never announces it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from flows.errors import CaseError
from flows.models import CaseStatus, Disposition
from flows.policy import RulesFile
from flows.record import events
from flows.record.case_store import CaseBook
from flows.record.case_views import aware
from flows.record.cases import AUTO_CLOSE_ACTOR
from flows.record.metrics import incident_clocks
from flows.record.sla import SlaClock, sla_clocks
from flows.record.slack_summary import incident_thread
from flows.record.store import Store
from flows.record.tables import IncidentRow, IncidentTriageRow, SlaEventRow
from integrations.errors import IntegrationError
from integrations.slack import SlackChat, duration

log = logging.getLogger("stanch.cases")

_VERBS = {"acknowledge": "acknowledged", "contain": "contained", "resolve": "resolved"}


class SlaNotice(BaseModel):
    """One warning or breach the sweep recorded (and announced, when Slack is set up)."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    tenant: str
    clock: str
    kind: Literal["warning", "breach"]
    deadline: datetime
    posted: bool


def notice_text(incident_id: str, severity: str, state: SlaClock, *, now: datetime) -> str:
    """The words of a warning or breach (no alert-derived text: ids and times only)."""
    target = duration(state.target_seconds)
    verb = _VERBS.get(state.clock, state.clock)
    if state.state == "breached":
        return (
            f":rotating_light: SLA breached: {incident_id} ({severity}) was not {verb} within "
            f"{target} of its first alert (deadline {state.deadline:%Y-%m-%d %H:%M} UTC)."
        )
    left = duration((state.deadline - now).total_seconds())
    return (
        f":warning: SLA warning: {incident_id} ({severity}) must be {verb} by "
        f"{state.deadline:%Y-%m-%d %H:%M} UTC ({left} left of {target})."
    )


async def _record(
    store: Store, incident: Any, severity: str, state: SlaClock, kind: str, now: datetime
) -> bool:
    try:
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(SlaEventRow).values(
                    incident_id=incident.id,
                    tenant=incident.tenant,
                    severity=severity,
                    clock=state.clock,
                    kind=kind,
                    deadline=state.deadline,
                    at=now,
                )
            )
    except IntegrityError:
        return False  # recorded by an earlier pass or another replica
    return True


async def _announce(store: Store, chat: SlackChat | None, incident_id: str, text: str) -> bool:
    if chat is None:
        return False
    thread = await incident_thread(store, incident_id)
    if thread is None:
        summary = await store.incident_summary(incident_id)
        channel, ts = (summary.channel, summary.ts) if summary else (chat.channel, None)
    else:
        channel, ts = thread.channel, thread.ts
    try:
        await chat.apost_notice(text, channel=channel, thread_ts=ts)
    except IntegrationError as exc:
        log.warning("%s: SLA notice not posted: %s", incident_id, exc)
        return False
    return True


async def sweep_slas(
    store: Store,
    rules_for: Callable[[str], RulesFile],
    chat: SlackChat | None,
    *,
    now: datetime,
) -> list[SlaNotice]:
    """Warn before and record each SLA breach of the open cases, as of ``now``.

    Args:
        store: the incident store.
        rules_for: each tenant's rules of engagement (their ``sla``).
        chat: where to announce (the incident's Slack thread, broadcast to the channel);
            ``None`` records without announcing.
        now: the time to judge by.
    """
    async with store.engine.connect() as conn:
        open_rows = (
            await conn.execute(
                select(IncidentRow).where(IncidentRow.status != CaseStatus.CLOSED.value)
            )
        ).all()
        ids = [r.id for r in open_rows]
        recorded = (
            await conn.execute(
                select(SlaEventRow.incident_id, SlaEventRow.clock, SlaEventRow.kind).where(
                    SlaEventRow.incident_id.in_(ids)
                )
            )
        ).all()
    done = {(r.incident_id, r.clock, r.kind) for r in recorded}
    by_id = {r.id: r for r in open_rows}
    notices: list[SlaNotice] = []
    for clocks in await incident_clocks(store, incident_ids=ids):
        incident = by_id[clocks.incident_id]
        breached = {c for i, c, k in done if i == incident.id and k == "breach"}
        sla = rules_for(incident.tenant).sla
        for state in sla_clocks(clocks, sla, now=now, recorded_breaches=breached):
            if state.state == "breached" and (incident.id, state.clock, "breach") not in done:
                kind: Literal["warning", "breach"] = "breach"
            elif (
                state.state == "pending"
                and now >= state.warn_at
                and (incident.id, state.clock, "warning") not in done
            ):
                kind = "warning"
            else:
                continue
            if not await _record(store, incident, clocks.severity, state, kind, now):
                continue
            if kind == "breach":
                events.sla_breached(
                    incident_id=incident.id,
                    tenant=incident.tenant,
                    severity=incident.severity,
                    playbook=incident.playbook,
                    clock=state.clock,
                    deadline=state.deadline.isoformat(),
                )
            text = notice_text(incident.id, clocks.severity, state, now=now)
            posted = await _announce(store, chat, incident.id, text)
            notices.append(
                SlaNotice(
                    incident_id=incident.id,
                    tenant=incident.tenant,
                    clock=state.clock,
                    kind=kind,
                    deadline=state.deadline,
                    posted=posted,
                )
            )
    return notices


async def auto_close_idle(
    store: Store, rules_for: Callable[[str], RulesFile], *, now: datetime
) -> list[str]:
    """Close, as ``policy:auto-close``, incidents whose tenant's policy says so because
    their triage score stayed below the threshold (no flow ran) for the rule's ``after``.

    Returns:
        The ids closed.
    """
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    IncidentRow.id,
                    IncidentRow.tenant,
                    IncidentTriageRow.score,
                    IncidentTriageRow.updated_at,
                )
                .join(IncidentTriageRow, IncidentTriageRow.incident_id == IncidentRow.id)
                .where(
                    IncidentRow.status == CaseStatus.NEW.value, IncidentTriageRow.started.is_(False)
                )
            )
        ).all()
    closed: list[str] = []
    book = CaseBook(store)
    for row in rows:
        rule = next(
            (r for r in rules_for(row.tenant).auto_close if r.when == "below-triage-threshold"),
            None,
        )
        if rule is None or now - aware(row.updated_at) < rule.after:
            continue
        try:
            await book.close(
                row.id,
                disposition=Disposition(rule.disposition),
                summary=(
                    f"Triage score {row.score} stayed below the threshold for "
                    f"{duration(rule.after.total_seconds())}: closed by the tenant's policy."
                ),
                actor=AUTO_CLOSE_ACTOR,
            )
        except CaseError as exc:  # closed meanwhile by a person: theirs stands
            log.info("%s: not auto-closed: %s", row.id, exc)
            continue
        closed.append(row.id)
    return closed
