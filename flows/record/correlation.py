"""Correlation as a store operation: the tenant lock and the incidents an alert may join.

Every intake of a store (two ``stanch serve`` replicas, a webhook and a ``poll-alerts``
run) places a batch of alerts inside :func:`tenant_transaction`: the lookup of the
incidents the alerts match and the insert-or-join are one transaction under a lock per
tenant, so what one intake decides the next one sees. Nothing is remembered between
batches: the store is the only index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flows.record.tables import IncidentEntityRow, IncidentRow, IncidentTriageRow

CORRELATION_ACTOR = "stanch:correlation"
"""Who the record names for links and merges correlation makes."""

_ENTITIES = cast(Table, IncidentEntityRow.__table__)
_CHUNK = 500  # bound parameters per IN (...) list, well under every backend's limit


async def lock_tenant(conn: AsyncConnection, tenant: str) -> None:
    """Take the tenant's correlation lock for the rest of ``conn``'s transaction.

    PostgreSQL: a transaction advisory lock keyed by the tenant. SQLite has one writer at
    a time anyway; the caller's ``BEGIN IMMEDIATE`` (see :func:`tenant_transaction`) is
    that lock, so nothing is done here.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"stanch-correlate:{tenant}"},
        )


@asynccontextmanager
async def tenant_transaction(engine: AsyncEngine, tenant: str) -> AsyncIterator[AsyncConnection]:
    """A transaction holding ``tenant``'s correlation lock; committed when the block ends.

    SQLite: ``BEGIN IMMEDIATE`` (the write lock, taken before the first read, so a batch
    never reads a snapshot another writer has moved past). PostgreSQL: ``BEGIN`` and the
    tenant's advisory lock. Rolled back if the block raises.
    """
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await conn.begin()
        await lock_tenant(conn, tenant)
        try:
            yield conn
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


@dataclass(slots=True)
class Candidate:
    """A stored incident that names at least one of a batch's entities.

    Attributes:
        id: the incident.
        status: its case status.
        created_ms: when it was created (oldest survives a merge).
        severity: triage severity; alert_count: alerts it holds; started: its flow run
            was started (or claimed for starting).
        seen: every entity it names: (kind, value) -> [first_seen_ms, last_seen_ms].
    """

    id: str
    status: str
    created_ms: int
    severity: int
    alert_count: int
    started: bool
    seen: dict[tuple[str, str], list[int]] = field(default_factory=dict)


async def matching_incidents(
    conn: AsyncConnection,
    tenant: str,
    keys: Iterable[tuple[str, str]],
    *,
    since_ms: int,
    until_ms: int,
) -> list[Candidate]:
    """The tenant's incidents naming one of ``keys`` seen within [since_ms, until_ms].

    Closed incidents are returned too (correlation links a new incident to them rather
    than joining); each comes with all its entities, so a join can update their spans.
    """
    by_kind: dict[str, list[str]] = {}
    for kind, value in dict.fromkeys(keys):
        by_kind.setdefault(kind, []).append(value)
    ids: set[str] = set()
    for kind, values in by_kind.items():
        for start in range(0, len(values), _CHUNK):
            matched = await conn.scalars(
                select(_ENTITIES.c.incident_id)
                .where(
                    _ENTITIES.c.tenant == tenant,
                    _ENTITIES.c.kind == kind,
                    _ENTITIES.c.value.in_(values[start : start + _CHUNK]),
                    _ENTITIES.c.last_seen_ms >= since_ms,
                    _ENTITIES.c.first_seen_ms <= until_ms,
                )
                .distinct()
            )
            ids.update(matched)
    if not ids:
        return []
    found: dict[str, Candidate] = {}
    listed = sorted(ids)
    for start in range(0, len(listed), _CHUNK):
        chunk = listed[start : start + _CHUNK]
        rows = await conn.execute(
            select(
                IncidentRow.id,
                IncidentRow.status,
                IncidentRow.created_at,
                IncidentTriageRow.severity,
                IncidentTriageRow.alert_count,
                IncidentTriageRow.started,
            )
            .join(IncidentTriageRow, IncidentTriageRow.incident_id == IncidentRow.id)
            .where(IncidentRow.id.in_(chunk), IncidentRow.tenant == tenant)
        )
        for incident_id, status, created, severity, alert_count, started in rows:
            found[incident_id] = Candidate(
                incident_id,
                status,
                int(created.timestamp() * 1000),
                severity,
                alert_count,
                bool(started),
            )
        entities = await conn.execute(
            select(
                _ENTITIES.c.incident_id,
                _ENTITIES.c.kind,
                _ENTITIES.c.value,
                _ENTITIES.c.first_seen_ms,
                _ENTITIES.c.last_seen_ms,
            ).where(_ENTITIES.c.incident_id.in_(chunk))
        )
        for incident_id, kind, value, first, last in entities:
            if (candidate := found.get(incident_id)) is not None:
                candidate.seen[(kind, value)] = [first, last]
    return list(found.values())
