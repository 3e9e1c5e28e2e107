"""Reading cases: one incident's case with its history, and lists of cases."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flows.errors import CaseInputError, UnknownIncident
from flows.models import CaseStatus
from flows.record.cases import LinkKind
from flows.record.tables import (
    CaseAssignmentRow,
    CaseLinkRow,
    CaseNoteRow,
    CaseTransitionRow,
    IncidentRow,
)
from integrations.ocsf import SeverityId

_INCIDENTS = cast(Table, IncidentRow.__table__)
_TRANSITIONS = cast(Table, CaseTransitionRow.__table__)
_NOTES = cast(Table, CaseNoteRow.__table__)
_ASSIGNMENTS = cast(Table, CaseAssignmentRow.__table__)
_LINKS = cast(Table, CaseLinkRow.__table__)


def aware(at: datetime) -> datetime:
    """``at`` with UTC attached when the driver dropped it (SQLite; the store writes UTC)."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# What a case looks like when read ------------------------------------------------------
class CaseTransition(BaseModel):
    """One recorded status change."""

    model_config = ConfigDict(frozen=True)

    from_status: str
    to_status: str
    actor: str
    reason: str
    disposition: str | None = None
    duplicate_of: str | None = None
    at: datetime
    ledger_seq: int


class CaseNote(BaseModel):
    """One note, as written."""

    model_config = ConfigDict(frozen=True)

    author: str
    text: str
    at: datetime
    ledger_seq: int


class CaseAssignment(BaseModel):
    """Who was given the case, by whom, when."""

    model_config = ConfigDict(frozen=True)

    assignee: str
    actor: str
    at: datetime
    ledger_seq: int


class CaseLink(BaseModel):
    """A link between this incident and another, seen from this incident.

    ``direction`` is ``out`` when this incident points at the other (it is a duplicate
    of it, it was merged into it) and ``in`` when the other points here.
    """

    model_config = ConfigDict(frozen=True)

    kind: LinkKind
    incident_id: str
    direction: str = Field(pattern=r"^(in|out)$")
    actor: str
    at: datetime


class CaseRecord(BaseModel):
    """An incident as a case: its status and everything recorded about it.

    Attributes:
        status: the current :class:`CaseStatus` value.
        assignee: who has it now, if anyone.
        disposition, summary, closed_at, closed_by: of the closure in force (``None``
            while the case is open).
        duplicate_of: the incident a ``duplicate`` closure names.
        merged_into: the survivor this incident was merged into.
    """

    model_config = ConfigDict(frozen=True)

    incident_id: str
    tenant: str
    title: str
    severity: str
    status: str
    created_at: datetime
    flow_run_id: str | None
    playbook: str | None
    assignee: str | None = None
    disposition: str | None = None
    summary: str | None = None
    duplicate_of: str | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    merged_into: str | None = None
    transitions: list[CaseTransition] = Field(default_factory=list)
    notes: list[CaseNote] = Field(default_factory=list)
    assignments: list[CaseAssignment] = Field(default_factory=list)
    links: list[CaseLink] = Field(default_factory=list)


class CaseListing(BaseModel):
    """One row of ``stanch incidents list`` and ``GET /v1/incidents``."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    tenant: str
    title: str
    severity: str
    status: str
    assignee: str | None
    created_at: datetime


async def incident_row(
    conn: AsyncConnection, incident_id: str, tenant: str | None, *, field: str | None = None
) -> Any:
    """The incident's stored row, on ``conn``.

    Raises:
        UnknownIncident: no such incident, or not ``tenant``'s.
        CaseInputError: the same, for an incident a change points at (named by ``field``).
    """
    row = (await conn.execute(select(_INCIDENTS).where(_INCIDENTS.c.id == incident_id))).first()
    if row is None or (tenant is not None and row.tenant != tenant):
        if field is not None:
            raise CaseInputError(field, f"no incident {incident_id}")
        raise UnknownIncident(incident_id)
    return row


async def read_case(
    engine: AsyncEngine, incident_id: str, *, tenant: str | None = None
) -> CaseRecord:
    """The incident's case with its whole history.

    Raises:
        UnknownIncident: no such incident (of ``tenant``).
    """
    async with engine.connect() as conn:
        row = await incident_row(conn, incident_id, tenant)
        transitions = await _rows(conn, _TRANSITIONS, incident_id)
        notes = await _rows(conn, _NOTES, incident_id)
        assignments = await _rows(conn, _ASSIGNMENTS, incident_id)
        links = (
            await conn.execute(
                select(_LINKS)
                .where((_LINKS.c.incident_id == incident_id) | (_LINKS.c.linked_id == incident_id))
                .order_by(_LINKS.c.ledger_seq)
            )
        ).all()
    return _record_of(row, transitions, notes, assignments, links)


async def list_cases(
    engine: AsyncEngine,
    *,
    tenant: str | None = None,
    status: str | None = None,
    assignee: str | None = None,
    since: datetime | None = None,
    limit: int = 500,
) -> list[CaseListing]:
    """Cases, newest first, filtered; ``assignee`` is the current one."""
    latest = (
        select(_ASSIGNMENTS.c.incident_id, func.max(_ASSIGNMENTS.c.id).label("last"))
        .group_by(_ASSIGNMENTS.c.incident_id)
        .subquery()
    )
    current = (
        select(_ASSIGNMENTS.c.incident_id, _ASSIGNMENTS.c.assignee)
        .join(latest, _ASSIGNMENTS.c.id == latest.c.last)
        .subquery()
    )
    query = (
        select(_INCIDENTS, current.c.assignee)
        .outerjoin(current, current.c.incident_id == _INCIDENTS.c.id)
        .order_by(_INCIDENTS.c.created_at.desc(), _INCIDENTS.c.id.desc())
        .limit(limit)
    )
    if tenant is not None:
        query = query.where(_INCIDENTS.c.tenant == tenant)
    if status is not None:
        query = query.where(_INCIDENTS.c.status == status)
    if assignee is not None:
        query = query.where(current.c.assignee == assignee)
    if since is not None:
        query = query.where(_INCIDENTS.c.created_at >= since)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        CaseListing(
            incident_id=r.id,
            tenant=r.tenant,
            title=r.title,
            severity=severity_name(r.severity),
            status=r.status,
            assignee=r.assignee,
            created_at=aware(r.created_at),
        )
        for r in rows
    ]


async def case_touches(
    engine: AsyncEngine, incident_ids: Sequence[str]
) -> dict[str, list[tuple[str, datetime]]]:
    """Every case change of many incidents as ``(actor, at)``: assignments, notes and
    status changes, oldest first (the acknowledge and resolve clocks read them)."""
    found: dict[str, list[tuple[str, datetime]]] = {i: [] for i in incident_ids}
    if not incident_ids:
        return found
    async with engine.connect() as conn:
        for table, who in ((_ASSIGNMENTS, "actor"), (_NOTES, "author"), (_TRANSITIONS, "actor")):
            rows = (
                await conn.execute(
                    select(table.c.incident_id, table.c[who], table.c.at).where(
                        table.c.incident_id.in_(list(incident_ids))
                    )
                )
            ).all()
            for r in rows:
                found[r[0]].append((r[1], aware(r[2])))
    for touches in found.values():
        touches.sort(key=lambda t: t[1])
    return found


async def case_transitions(
    engine: AsyncEngine, incident_ids: Sequence[str]
) -> dict[str, list[CaseTransition]]:
    """The status changes of many incidents, oldest first."""
    found: dict[str, list[CaseTransition]] = {i: [] for i in incident_ids}
    if not incident_ids:
        return found
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(_TRANSITIONS)
                .where(_TRANSITIONS.c.incident_id.in_(list(incident_ids)))
                .order_by(_TRANSITIONS.c.id)
            )
        ).all()
    for r in rows:
        found[r.incident_id].append(_transition_of(r))
    return found


def severity_name(value: int) -> str:
    """``critical``, ``high`` ... for a stored OCSF severity id."""
    try:
        return SeverityId(int(value)).name.lower()
    except ValueError:
        return str(value)


async def _rows(conn: AsyncConnection, table: Any, incident_id: str) -> Sequence[Any]:
    return (
        await conn.execute(
            select(table).where(table.c.incident_id == incident_id).order_by(table.c.id)
        )
    ).all()


def _transition_of(r: Any) -> CaseTransition:
    return CaseTransition(
        from_status=r.from_status,
        to_status=r.to_status,
        actor=r.actor,
        reason=r.reason,
        disposition=r.disposition,
        duplicate_of=r.duplicate_of,
        at=aware(r.at),
        ledger_seq=r.ledger_seq,
    )


def _record_of(
    row: Any,
    transitions: Sequence[Any],
    notes: Sequence[Any],
    assignments: Sequence[Any],
    links: Sequence[Any],
) -> CaseRecord:
    history = [_transition_of(t) for t in transitions]
    closure = history[-1] if history and history[-1].to_status == CaseStatus.CLOSED else None
    link_views = [
        CaseLink(
            kind=LinkKind(link.kind),
            incident_id=link.linked_id if link.incident_id == row.id else link.incident_id,
            direction="out" if link.incident_id == row.id else "in",
            actor=link.actor,
            at=aware(link.at),
        )
        for link in links
    ]
    merged = next(
        (
            x.incident_id
            for x in link_views
            if x.kind == LinkKind.MERGED_INTO and x.direction == "out"
        ),
        None,
    )
    return CaseRecord(
        incident_id=row.id,
        tenant=row.tenant,
        title=row.title,
        severity=severity_name(row.severity),
        status=row.status,
        created_at=aware(row.created_at),
        flow_run_id=row.flow_run_id,
        playbook=row.playbook,
        assignee=assignments[-1].assignee if assignments else None,
        disposition=closure.disposition if closure else None,
        summary=closure.reason if closure else None,
        duplicate_of=closure.duplicate_of if closure else None,
        closed_at=closure.at if closure else None,
        closed_by=closure.actor if closure else None,
        merged_into=merged if closure else None,
        transitions=history,
        notes=[
            CaseNote(author=n.author, text=n.text, at=aware(n.at), ledger_seq=n.ledger_seq)
            for n in notes
        ],
        assignments=[
            CaseAssignment(
                assignee=a.assignee, actor=a.actor, at=aware(a.at), ledger_seq=a.ledger_seq
            )
            for a in assignments
        ],
        links=link_views,
    )
