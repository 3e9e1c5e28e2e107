"""MDR clocks across incidents, from what the store recorded.

Every figure is derived from stored facts — alert times, stage transitions, approval
requests and decisions — never from timers placed by hand: time to detect (first alert →
incident), to acknowledge (→ first human decision), to contain (→ contain stage done), to
resolve (→ remediate stage done), time waiting on approval, and each approver's latency.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select

from flows.models import Incident, Stage
from flows.record.store import Store
from flows.record.tables import ActionRow, ApprovalRow, IncidentRow, StageEventRow

CLOCKS = ("detect", "acknowledge", "contain", "resolve", "approval_wait")
HUMAN_OUTCOMES = ("approved", "denied", "partial")
BUILT_IN = "(built-in)"
"""How incidents no playbook handled (``incidents.playbook`` is NULL) are labelled."""

GroupBy = Literal["tenant", "playbook"]


def _aware(at: datetime) -> datetime:
    # SQLite hands datetimes back naive; the store writes UTC.
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass
class IncidentClocks:
    """One incident's clocks, in seconds (``None`` when the milestone was not reached)."""

    incident_id: str
    tenant: str
    severity: str
    created_at: datetime
    clocks: dict[str, float | None]
    approver_latency: dict[str, list[float]] = field(default_factory=dict)
    playbook: str | None = None

    @property
    def playbook_label(self) -> str:
        """The playbook's id, or :data:`BUILT_IN`."""
        return BUILT_IN if self.playbook is None else self.playbook


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((_aware(end) - _aware(start)).total_seconds(), 3)


def clocks_of(
    incident: Incident,
    events: Sequence[StageEventRow],
    approvals: Sequence[ApprovalRow],
    *,
    playbook: str | None = None,
) -> IncidentClocks:
    """The clocks of one incident from its stage transitions and approval records.

    ``playbook`` is the id of the playbook that handled it (``None``: the built-in
    response), carried along for grouping.
    """
    origin = incident.first_seen

    def completed(stage: Stage) -> datetime | None:
        # The first completion: a re-run of the incident completes the stage again by
        # replaying what was already done, which must not move the clock.
        done = [e.at for e in events if e.stage == stage.value and e.event == "completed"]
        return min(done, key=_aware) if done else None

    decided = [a for a in approvals if a.status in HUMAN_OUTCOMES and a.decided_at is not None]
    first_decision = min((a.decided_at for a in decided if a.decided_at), default=None)
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
    return IncidentClocks(
        incident_id=incident.id,
        tenant=incident.tenant,
        severity=incident.severity.name.lower(),
        created_at=_aware(incident.created_at),
        clocks={
            "detect": _seconds(origin, incident.created_at),
            "acknowledge": _seconds(origin, first_decision),
            "contain": _seconds(origin, completed(Stage.CONTAIN)),
            "resolve": _seconds(origin, completed(Stage.REMEDIATE)),
            "approval_wait": round(sum(waits), 3) if waits else None,
        },
        approver_latency=dict(latency),
        playbook=playbook,
    )


async def incident_clocks(
    store: Store, *, tenant: str | None = None, since: datetime | None = None
) -> list[IncidentClocks]:
    """The clocks of every incident (of a tenant, created since a time), oldest first."""
    query = select(IncidentRow).order_by(IncidentRow.created_at)
    if tenant is not None:
        query = query.where(IncidentRow.tenant == tenant)
    if since is not None:
        query = query.where(IncidentRow.created_at >= since)
    async with store.engine.connect() as conn:
        incidents = (await conn.execute(query)).all()
        ids = [row.id for row in incidents]
        events = (
            await conn.execute(
                select(StageEventRow)
                .where(StageEventRow.incident_id.in_(ids))
                .order_by(StageEventRow.id)
            )
        ).all()
        approvals = (
            await conn.execute(select(ApprovalRow).where(ApprovalRow.incident_id.in_(ids)))
        ).all()
    by_incident_events: dict[str, list[Any]] = defaultdict(list)
    for event in events:
        by_incident_events[event.incident_id].append(event)
    by_incident_approvals: dict[str, list[Any]] = defaultdict(list)
    for approval in approvals:
        by_incident_approvals[approval.incident_id].append(approval)
    return [
        clocks_of(
            Incident.model_validate(row.document),
            by_incident_events[row.id],
            by_incident_approvals[row.id],
            playbook=row.playbook,
        )
        for row in incidents
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": percentile(values, 0.9), "n": len(values)}


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
