"""Threat-intelligence answers in the store: the per-tenant cache and each incident's findings.

The cache is what keeps an alert storm from spending a reputation service's daily quota:
the second incident naming the same hash is answered from here, with no vendor request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.models import utcnow
from flows.record.tables import IncidentIntelRow, IntelCacheRow
from integrations.capabilities import IntelReport


class IntelRecords:
    """Reads and writes :class:`IntelCacheRow` and :class:`IncidentIntelRow`.

    Args:
        engine: the store's engine (``Store.engine``).
        clock: the time source that ages cache entries.
    """

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def _insert(self, table: type[IntelCacheRow] | type[IncidentIntelRow]) -> sqlite.Insert:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        insert: sqlite.Insert = dialect.insert(table)
        return insert

    async def cached(self, tenant: str, vendor: str, indicator: str) -> IntelReport | None:
        """The unexpired answer ``vendor`` gave ``tenant`` about ``indicator``, if any."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(IntelCacheRow.report).where(
                        IntelCacheRow.tenant == tenant,
                        IntelCacheRow.vendor == vendor,
                        IntelCacheRow.indicator == indicator,
                        IntelCacheRow.expires_at > self._clock(),
                    )
                )
            ).scalar_one_or_none()
        return None if row is None else IntelReport.model_validate(row)

    async def remember(self, tenant: str, report: IntelReport, ttl: timedelta) -> None:
        """Keep ``report`` for ``ttl``, replacing an older answer about the same indicator."""
        now = self._clock()
        values = {
            "kind": report.kind.value,
            "report": report.model_dump(mode="json"),
            "fetched_at": now,
            "expires_at": now + ttl,
        }
        statement = self._insert(IntelCacheRow).values(
            tenant=tenant, vendor=report.vendor, indicator=report.indicator, **values
        )
        statement = statement.on_conflict_do_update(
            index_elements=["tenant", "vendor", "indicator"], set_=values
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def record(self, incident_id: str, findings: Sequence[tuple[IntelReport, bool]]) -> None:
        """Store an incident's findings ``(report, from the cache)``, replacing earlier ones."""
        now = self._clock()
        rows = [
            {
                "incident_id": incident_id,
                "vendor": report.vendor,
                "indicator": report.indicator,
                "verdict": report.verdict.value,
                "report": report.model_dump(mode="json"),
                "cached": cached,
                "looked_up_at": now,
            }
            for report, cached in findings
        ]
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(IncidentIntelRow).where(IncidentIntelRow.incident_id == incident_id)
            )
            if rows:
                await conn.execute(self._insert(IncidentIntelRow), rows)

    async def of_incident(self, incident_id: str) -> list[IncidentIntelRow]:
        """The findings stored for ``incident_id``, by indicator then vendor."""
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(IncidentIntelRow)
                .where(IncidentIntelRow.incident_id == incident_id)
                .order_by(IncidentIntelRow.indicator, IncidentIntelRow.vendor)
            )
            return [IncidentIntelRow(**dict(row._mapping)) for row in result]
