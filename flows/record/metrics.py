"""MDR clocks across incidents, from what the store recorded.

Every figure is derived from stored facts — the alerts' own times, the incident's
creation, approval decisions, executed actions and case changes — never from timers
placed by hand. Each clock runs from the first alert: detect (→ the incident is opened),
acknowledge (→ the first human touch: an approval decision, an assignment, a note, a
closure), contain (→ the first containment action executed; absent, with the reason, when
none was), resolve (→ the case is closed). Also the time waiting on approval, each
approver's latency, and whether containment needed a human at all.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from flows.models import ActionStatus, CaseStatus, Incident, Stage
from flows.record.case_views import aware, case_touches, case_transitions
from flows.record.cases import is_human
from flows.record.store import Store
from flows.record.tables import ActionRow, ApprovalRow, IncidentRow

CLOCKS = ("detect", "acknowledge", "contain", "resolve", "approval_wait")
HUMAN_OUTCOMES = ("approved", "denied", "partial")
BUILT_IN = "(built-in)"
"""How incidents no playbook handled (``incidents.playbook`` is NULL) are labelled."""

GroupBy = Literal["tenant", "playbook"]


_aware = aware


@dataclass
class IncidentClocks:
    """One incident's clocks, in seconds (``None`` when the milestone was not reached).

    Attributes:
        first_seen: the first alert's own time, where every clock starts.
        missing: for a clock that is ``None``, why (``containment denied`` ...).
        status: the case status when the clocks were read.
        contained_by: ``automation`` when every executed containment action ran
            unattended, ``human`` when one needed an approval, ``None`` when none ran.
    """

    incident_id: str
    tenant: str
    severity: str
    created_at: datetime
    clocks: dict[str, float | None]
    approver_latency: dict[str, list[float]] = field(default_factory=dict)
    playbook: str | None = None
    first_seen: datetime | None = None
    missing: dict[str, str] = field(default_factory=dict)
    status: str = CaseStatus.NEW.value
    contained_by: Literal["automation", "human"] | None = None

    @property
    def playbook_label(self) -> str:
        """The playbook's id, or :data:`BUILT_IN`."""
        return BUILT_IN if self.playbook is None else self.playbook


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((_aware(end) - _aware(start)).total_seconds(), 3)


def _action_field(row: Any, name: str) -> Any:
    result = row.result if isinstance(row.result, dict) else {}
    return result.get(name)


def _stage(row: Any) -> str | None:
    plan = row.plan if isinstance(row.plan, dict) else {}
    stage = plan.get("stage")
    return None if stage is None else str(stage)


def _why_not_contained(containment: Sequence[Any], status: str) -> str:
    """Why no containment action executed, from what happened to the planned ones."""
    outcomes = {row.status for row in containment}
    for outcome, why in (
        (ActionStatus.DENIED.value, "containment denied"),
        (ActionStatus.FAILED.value, "containment failed"),
        (ActionStatus.FORBIDDEN.value, "containment forbidden by policy"),
        (ActionStatus.ALREADY_DONE.value, "the targets were already contained"),
    ):
        if outcome in outcomes:
            return why
    if status in (CaseStatus.NEW, CaseStatus.INVESTIGATING):
        return "not reached yet"
    return "no containment was planned"


def clocks_of(
    incident: Incident,
    *,
    approvals: Sequence[Any] = (),
    actions: Sequence[Any] = (),
    touches: Sequence[tuple[str, datetime]] = (),
    status: str = CaseStatus.NEW.value,
    closed_at: datetime | None = None,
    playbook: str | None = None,
) -> IncidentClocks:
    """The clocks of one incident from what the store recorded about it.

    Args:
        incident: the incident (its alerts' times and its creation).
        approvals: its approval requests (``ApprovalRow``).
        actions: its action rows (``ActionRow``), with their stored results.
        touches: its case changes as ``(actor, at)`` (assignments, notes, status
            changes); only people's count for acknowledge.
        status: its case status now.
        closed_at: when the closure in force was recorded (``None`` while open).
        playbook: the id of the playbook that handled it (``None``: the built-in
            response), carried along for grouping.
    """
    origin = incident.first_seen
    decided = [a for a in approvals if a.status in HUMAN_OUTCOMES and a.decided_at is not None]
    human = [_aware(a.decided_at) for a in decided]
    human += [_aware(at) for actor, at in touches if is_human(actor)]
    first_touch = min(human, default=None)
    containment = [a for a in actions if _stage(a) == Stage.CONTAIN.value]
    executed = [
        a
        for a in containment
        if a.status == ActionStatus.EXECUTED.value and a.finished_at is not None
    ]
    first_contained = min((_aware(a.finished_at) for a in executed), default=None)
    waits = [
        (_aware(a.decided_at) - _aware(a.requested_at)).total_seconds()
        for a in approvals
        if a.decided_at is not None
    ]
    latency: dict[str, list[float]] = defaultdict(list)
    for a in decided:
        if a.decided_at is not None and a.decided_by:
            latency[a.decided_by].append(
                round((_aware(a.decided_at) - _aware(a.requested_at)).total_seconds(), 3)
            )
    resolved = closed_at if status == CaseStatus.CLOSED else None
    missing: dict[str, str] = {}
    if first_touch is None:
        missing["acknowledge"] = "no person has touched the case"
    if first_contained is None:
        missing["contain"] = _why_not_contained(containment, status)
    if resolved is None:
        missing["resolve"] = f"the case is {status}"
    contained_by: Literal["automation", "human"] | None = None
    if executed:
        unattended = all(_action_field(a, "verdict") == "unattended" for a in executed)
        contained_by = "automation" if unattended else "human"
    return IncidentClocks(
        incident_id=incident.id,
        tenant=incident.tenant,
        severity=incident.severity.name.lower(),
        created_at=_aware(incident.created_at),
        clocks={
            "detect": _seconds(origin, incident.created_at),
            "acknowledge": _seconds(origin, first_touch),
            "contain": _seconds(origin, first_contained),
            "resolve": _seconds(origin, resolved),
            "approval_wait": round(sum(waits), 3) if waits else None,
        },
        approver_latency=dict(latency),
        playbook=playbook,
        first_seen=_aware(origin),
        missing=missing,
        status=status,
        contained_by=contained_by,
    )


async def incident_clocks(
    store: Store,
    *,
    tenant: str | None = None,
    since: datetime | None = None,
    incident_ids: Sequence[str] | None = None,
) -> list[IncidentClocks]:
    """The clocks of every incident (of a tenant, created since a time, or named), oldest
    first."""
    query = select(IncidentRow).order_by(IncidentRow.created_at)
    if tenant is not None:
        query = query.where(IncidentRow.tenant == tenant)
    if since is not None:
        query = query.where(IncidentRow.created_at >= since)
    if incident_ids is not None:
        query = query.where(IncidentRow.id.in_(list(incident_ids)))
    async with store.engine.connect() as conn:
        incidents = (await conn.execute(query)).all()
        ids = [row.id for row in incidents]
        approvals = (
            await conn.execute(select(ApprovalRow).where(ApprovalRow.incident_id.in_(ids)))
        ).all()
        actions = (
            await conn.execute(select(ActionRow).where(ActionRow.incident_id.in_(ids)))
        ).all()
    touches = await case_touches(store.engine, ids)
    transitions = await case_transitions(store.engine, ids)
    by_incident_approvals: dict[str, list[Any]] = defaultdict(list)
    for approval in approvals:
        by_incident_approvals[approval.incident_id].append(approval)
    by_incident_actions: dict[str, list[Any]] = defaultdict(list)
    for action in actions:
        by_incident_actions[action.incident_id].append(action)
    found: list[IncidentClocks] = []
    for row in incidents:
        closures = [t.at for t in transitions[row.id] if t.to_status == CaseStatus.CLOSED]
        found.append(
            clocks_of(
                Incident.model_validate(row.document),
                approvals=by_incident_approvals[row.id],
                actions=by_incident_actions[row.id],
                touches=touches[row.id],
                status=row.status,
                closed_at=closures[-1] if closures else None,
                playbook=row.playbook,
            )
        )
    return found


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": percentile(values, 0.9), "n": len(values)}


def automation(clocks: Iterable[IncidentClocks]) -> dict[str, Any]:
    """How many contained incidents needed no human, how many did, and the share without.

    ``automation_rate`` is ``None`` when nothing was contained.
    """
    items = list(clocks)
    unattended = sum(c.contained_by == "automation" for c in items)
    with_human = sum(c.contained_by == "human" for c in items)
    total = unattended + with_human
    return {
        "automation": unattended,
        "human": with_human,
        "automation_rate": round(unattended / total, 3) if total else None,
    }


def summarise(
    clocks: Iterable[IncidentClocks], *, by: GroupBy = "tenant"
) -> dict[str, dict[str, Any]]:
    """Per tenant, or per playbook: incident count, median and p90 of each clock,
    approver latencies.

    Args:
        clocks: the incidents' clocks.
        by: ``tenant``, or ``playbook`` (the playbook's id; :data:`BUILT_IN` for
            incidents the built-in response handled).
    """
    groups: dict[str, list[IncidentClocks]] = defaultdict(list)
    for item in clocks:
        groups[item.tenant if by == "tenant" else item.playbook_label].append(item)
    summary: dict[str, dict[str, Any]] = {}
    for key, items in sorted(groups.items()):
        entry: dict[str, Any] = {"incidents": len(items)}
        for name in CLOCKS:
            values = [v for c in items if (v := c.clocks[name]) is not None]
            entry[name] = _stats(values) if values else None
        approvers: dict[str, list[float]] = defaultdict(list)
        for item in items:
            for who, latencies in item.approver_latency.items():
                approvers[who].extend(latencies)
        entry["approvers"] = {who: _stats(v) for who, v in sorted(approvers.items())}
        entry["containment"] = automation(items)
        summary[key] = entry
    return summary


async def period_report(store: Store, *, tenant: str, since: datetime) -> dict[str, Any]:
    """What happened for a tenant since a time: incidents, clocks, actions taken and undone."""
    clocks = await incident_clocks(store, tenant=tenant, since=since)
    ids = [c.incident_id for c in clocks]
    async with store.engine.connect() as conn:
        actions = (
            await conn.execute(select(ActionRow).where(ActionRow.incident_id.in_(ids)))
        ).all()
    by_severity: dict[str, int] = defaultdict(int)
    by_playbook: dict[str, int] = defaultdict(int)
    for item in clocks:
        by_severity[item.severity] += 1
        by_playbook[item.playbook_label] += 1
    taken: dict[str, int] = defaultdict(int)
    refused: dict[str, int] = defaultdict(int)
    for action in actions:
        if action.status in ("executed", "already_done"):
            taken[action.action] += 1
        elif action.status in ("denied", "forbidden", "failed"):
            refused[f"{action.action} ({action.status})"] += 1
    undone = sum(
        n
        for name, n in taken.items()
        if name.split(".")[-1] in ("release_host", "unsuspend_user", "unblock_ip", "unblock_hash")
    )
    return {
        "tenant": tenant,
        "since": since.isoformat(),
        "incidents": len(clocks),
        "by_severity": dict(sorted(by_severity.items())),
        "by_playbook": dict(sorted(by_playbook.items())),
        "clocks": summarise(clocks).get(tenant, {}),
        "actions_taken": dict(sorted(taken.items())),
        "actions_refused": dict(sorted(refused.items())),
        "actions_undone": undone,
    }
