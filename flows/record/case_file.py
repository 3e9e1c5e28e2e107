"""Everything recorded about one incident, as one value: what ``stanch incidents show`` and
``GET /v1/incidents/{id}`` return.

Alert-derived text (titles, hostnames) is carried as data; whoever renders it escapes it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from flows.models import Incident
from flows.policy import Sla
from flows.record.case_views import CaseRecord, aware, read_case
from flows.record.metrics import incident_clocks
from flows.record.sla import SlaClock, sla_clocks
from flows.record.store import Store
from flows.record.tables import SlaEventRow


class AlertLine(BaseModel):
    """One alert of the incident."""

    model_config = ConfigDict(frozen=True)

    uid: str
    time: datetime
    vendor: str
    severity: str
    title: str


class ActionLine(BaseModel):
    """One action the incident's response planned, and what became of it."""

    model_config = ConfigDict(frozen=True)

    action: str
    target: str
    stage: str | None
    status: str
    approved_by: list[str] = Field(default_factory=list)
    plan_sha256: str
    finished_at: datetime | None


class ApprovalLine(BaseModel):
    """One approval request and its decision."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: str
    requested_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None


class StageLine(BaseModel):
    """One recorded stage transition of the flow."""

    model_config = ConfigDict(frozen=True)

    stage: str
    event: str
    at: datetime


class CaseFile(BaseModel):
    """An incident as a case, with its evidence, response and clocks.

    Attributes:
        case: status, assignee, closure, history, notes, links.
        alerts: the alerts, oldest first.
        entities: hosts, users, internet addresses, hashes and ATT&CK techniques named.
        stages: the flow's stage transitions (the run's timeline).
        actions: what the response did, with who authorised it.
        approvals: approval requests and decisions.
        clocks: seconds from the first alert (``None`` when not reached).
        clock_notes: why a clock has no value.
        sla: each clock with a target, against it (empty without targets).
    """

    model_config = ConfigDict(frozen=True)

    case: CaseRecord
    alerts: list[AlertLine]
    entities: dict[str, list[str]]
    stages: list[StageLine]
    actions: list[ActionLine]
    approvals: list[ApprovalLine]
    clocks: dict[str, float | None]
    clock_notes: dict[str, str]
    sla: list[SlaClock]


async def recorded_breaches(store: Store, incident_ids: Collection[str]) -> dict[str, set[str]]:
    """Per incident, the clocks whose SLA breach the sweep recorded."""
    found: dict[str, set[str]] = {i: set() for i in incident_ids}
    if not found:
        return found
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(SlaEventRow.incident_id, SlaEventRow.clock).where(
                    SlaEventRow.incident_id.in_(list(found)), SlaEventRow.kind == "breach"
                )
            )
        ).all()
    for row in rows:
        found[row.incident_id].add(row.clock)
    return found


async def case_file(
    store: Store,
    incident_id: str,
    *,
    sla: Sla | None,
    now: datetime,
    tenant: str | None = None,
) -> CaseFile:
    """Read everything about one incident.

    Args:
        store: the incident store.
        incident_id: the incident.
        sla: the tenant's service levels (``None``: none reported).
        now: the time pending SLA clocks are judged against.
        tenant: when given, another tenant's incident is unknown.

    Raises:
        UnknownIncident: no such incident (of ``tenant``).
    """
    case = await read_case(store.engine, incident_id, tenant=tenant)
    row = await store.get_incident(incident_id)
    assert row is not None  # read_case found it
    incident = Incident.model_validate(row.document)
    (clocks,) = await incident_clocks(store, incident_ids=[incident_id])
    actions = await store.actions(incident_id)
    approvals = sorted(await store.approvals(incident_id=incident_id), key=lambda a: a.requested_at)
    stages = await store.stage_events(incident_id)
    states = (
        sla_clocks(
            clocks, sla, now=now, recorded_breaches=await recorded_breaches(store, incident_id)
        )
        if sla is not None
        else []
    )
    return CaseFile(
        case=case,
        alerts=[
            AlertLine(
                uid=a.uid,
                time=a.occurred_at,
                vendor=a.vendor,
                severity=a.severity_id.name.lower(),
                title=a.title,
            )
            for a in sorted(incident.alerts, key=lambda a: a.occurred_at)
        ],
        entities={
            "hosts": incident.hostnames,
            "users": incident.users,
            "internet_ips": incident.external_ips,
            "sha256": incident.sha256s,
            "attack_techniques": incident.techniques,
        },
        stages=[StageLine(stage=e.stage, event=e.event, at=aware(e.at)) for e in stages],
        actions=[_action_line(a) for a in actions],
        approvals=[
            ApprovalLine(
                id=a.id,
                status=a.status,
                requested_at=aware(a.requested_at),
                decided_at=aware(a.decided_at) if a.decided_at else None,
                decided_by=a.decided_by,
                reason=a.reason,
            )
            for a in approvals
        ],
        clocks=clocks.clocks,
        clock_notes=clocks.missing,
        sla=states,
    )


def _action_line(row: Any) -> ActionLine:
    result = row.result if isinstance(row.result, dict) else {}
    plan = row.plan if isinstance(row.plan, dict) else {}
    return ActionLine(
        action=row.action,
        target=str(plan.get("target_label") or row.target),
        stage=plan.get("stage"),
        status=row.status,
        approved_by=[str(a) for a in result.get("approved_by", [])],
        plan_sha256=row.plan_sha256,
        finished_at=aware(row.finished_at) if row.finished_at else None,
    )
