"""The outbox of incident runs: a start decided is a row, committed with the alerts.

Intake writes one row per incident it starts in the transaction that stores the alerts
(:func:`enqueue_starts`), so every incident a sender was told is ``started`` outlives a
crash before its run exists. Whoever starts the run marks the row (:func:`mark_started`);
a later ``stanch serve`` picks up the rows still pending (:func:`claim_pending`), each
under a lease so that two drainers never start one incident at the same time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flows.models import Incident, utcnow
from flows.record.tables import IncidentRow, IncidentStartRow

START_LEASE = timedelta(minutes=2)
"""How long a claimed start is left to its claimer before another drainer may take it."""


async def enqueue_starts(
    conn: AsyncConnection, incidents: Iterable[Incident], *, at: datetime
) -> None:
    """Add a pending start per incident (one already queued is left as it is)."""
    ids = [(i.id, i.tenant) for i in incidents]
    if not ids:
        return
    queued = set(
        await conn.scalars(
            select(IncidentStartRow.incident_id).where(
                IncidentStartRow.incident_id.in_([i for i, _ in ids])
            )
        )
    )
    rows = [
        {"incident_id": i, "tenant": t, "created_at": at, "attempts": 0}
        for i, t in ids
        if i not in queued
    ]
    if rows:
        await conn.execute(insert(IncidentStartRow), rows)


async def mark_started(engine: AsyncEngine, incident_ids: Iterable[str]) -> None:
    """Record that these incidents' runs exist."""
    ids = list(incident_ids)
    if not ids:
        return
    async with engine.begin() as conn:
        await conn.execute(
            update(IncidentStartRow)
            .where(IncidentStartRow.incident_id.in_(ids))
            .values(started_at=utcnow(), claimed_at=None)
        )


async def mark_failed(engine: AsyncEngine, incident_id: str, error: str) -> None:
    """Record a failed start; the row stays pending for the next drain."""
    async with engine.begin() as conn:
        await conn.execute(
            update(IncidentStartRow)
            .where(IncidentStartRow.incident_id == incident_id)
            .values(
                attempts=IncidentStartRow.attempts + 1,
                last_error=error[:2000],
                claimed_at=None,
            )
        )


async def claim_pending(
    engine: AsyncEngine, *, limit: int = 100, lease: timedelta = START_LEASE
) -> list[Incident]:
    """Claim up to ``limit`` pending starts (unclaimed or with a lapsed lease), oldest first.

    Returns the incidents as stored, to be started and then marked.
    """
    now = utcnow()
    free = and_(
        IncidentStartRow.started_at.is_(None),
        or_(IncidentStartRow.claimed_at.is_(None), IncidentStartRow.claimed_at < now - lease),
    )
    claimed: list[Incident] = []
    async with engine.begin() as conn:
        ids = list(
            await conn.scalars(
                select(IncidentStartRow.incident_id)
                .where(free)
                .order_by(IncidentStartRow.created_at, IncidentStartRow.incident_id)
                .limit(limit)
            )
        )
        for incident_id in ids:
            # Conditional on the row still being free: a concurrent drainer's claim wins.
            taken = await conn.execute(
                update(IncidentStartRow)
                .where(IncidentStartRow.incident_id == incident_id, free)
                .values(claimed_at=now)
            )
            if not taken.rowcount:
                continue
            document = await conn.scalar(
                select(IncidentRow.document).where(IncidentRow.id == incident_id)
            )
            if document is not None:
                claimed.append(Incident.model_validate(document))
    return claimed


async def pending_starts(engine: AsyncEngine) -> list[str]:
    """Ids of the incidents whose run was decided but not yet created, oldest first."""
    async with engine.connect() as conn:
        return list(
            await conn.scalars(
                select(IncidentStartRow.incident_id)
                .where(IncidentStartRow.started_at.is_(None))
                .order_by(IncidentStartRow.created_at, IncidentStartRow.incident_id)
            )
        )


__all__ = [
    "START_LEASE",
    "claim_pending",
    "enqueue_starts",
    "mark_failed",
    "mark_started",
    "pending_starts",
]
