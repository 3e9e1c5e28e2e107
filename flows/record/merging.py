"""Moving one incident's contents into another: alerts, entities and actions.

Used by an analyst's merge (:meth:`flows.record.CaseBook.merge`); any other merge of
incidents (correlation bridging two of them) can share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.models import ActionStatus, Incident
from flows.record.tables import ActionRow, AlertRow, IncidentEntityRow, IncidentRow

_INCIDENTS = cast(Table, IncidentRow.__table__)
_ALERTS = cast(Table, AlertRow.__table__)
_ENTITIES = cast(Table, IncidentEntityRow.__table__)
_ACTIONS = cast(Table, ActionRow.__table__)
_DONE = (ActionStatus.EXECUTED.value, ActionStatus.ALREADY_DONE.value)


@dataclass(frozen=True)
class Moved:
    """What a merge moved from one incident to another."""

    alerts: int
    entities: int
    actions: int
    kept: tuple[str, ...] = ()
    """Executed actions left with the merged incident (``verb target``), when asked to."""


async def move_incident_contents(
    conn: AsyncConnection, source: str, survivor: str, *, keep_executed: bool = False
) -> Moved:
    """Move alerts, entities and actions of ``source`` to ``survivor``, on ``conn``.

    Alerts and actions are re-pointed (an action keeps its idempotency key, so it is still
    never repeated); an entity both name keeps the earliest first-seen and the latest
    last-seen time. The survivor's stored document gains the source's alerts it lacks.
    With ``keep_executed``, actions that took effect stay with ``source`` (the incident
    they were approved and run for) and are listed in :attr:`Moved.kept`.
    The caller owns the transaction (and the check that both are the same tenant's).
    """
    alerts = await conn.execute(
        update(_ALERTS).where(_ALERTS.c.incident_id == source).values(incident_id=survivor)
    )
    which = _ACTIONS.c.incident_id == source
    left: tuple[str, ...] = ()
    if keep_executed:
        done = _ACTIONS.c.status.in_(_DONE)
        left = tuple(
            f"{row.action} {row.target}"
            for row in (
                await conn.execute(
                    select(_ACTIONS.c.action, _ACTIONS.c.target)
                    .where(which & done)
                    .order_by(_ACTIONS.c.id)
                )
            ).all()
        )
        which = which & ~done
    actions = await conn.execute(update(_ACTIONS).where(which).values(incident_id=survivor))
    theirs = (await conn.execute(select(_ENTITIES).where(_ENTITIES.c.incident_id == source))).all()
    for entity in theirs:
        key = (
            (_ENTITIES.c.incident_id == survivor)
            & (_ENTITIES.c.kind == entity.kind)
            & (_ENTITIES.c.value == entity.value)
        )
        mine = (await conn.execute(select(_ENTITIES).where(key))).first()
        if mine is None:
            await conn.execute(
                insert(_ENTITIES).values(
                    incident_id=survivor,
                    kind=entity.kind,
                    value=entity.value,
                    tenant=entity.tenant,
                    first_seen_ms=entity.first_seen_ms,
                    last_seen_ms=entity.last_seen_ms,
                )
            )
        else:
            await conn.execute(
                update(_ENTITIES)
                .where(key)
                .values(
                    first_seen_ms=min(mine.first_seen_ms, entity.first_seen_ms),
                    last_seen_ms=max(mine.last_seen_ms, entity.last_seen_ms),
                )
            )
    await conn.execute(delete(_ENTITIES).where(_ENTITIES.c.incident_id == source))
    documents = {
        row.id: row.document
        for row in (
            await conn.execute(
                select(_INCIDENTS.c.id, _INCIDENTS.c.document).where(
                    _INCIDENTS.c.id.in_([source, survivor])
                )
            )
        ).all()
    }
    kept = Incident.model_validate(_json(documents[survivor]))
    gone = Incident.model_validate(_json(documents[source]))
    uids = {a.finding_info.uid for a in kept.alerts}
    joined = kept.model_copy(
        update={
            "alerts": [*kept.alerts, *(a for a in gone.alerts if a.finding_info.uid not in uids)]
        }
    )
    await conn.execute(
        update(_INCIDENTS)
        .where(_INCIDENTS.c.id == survivor)
        .values(document=joined.model_dump(mode="json"), severity=int(joined.severity))
    )
    return Moved(
        alerts=int(getattr(alerts, "rowcount", 0) or 0),
        entities=len(theirs),
        actions=int(getattr(actions, "rowcount", 0) or 0),
        kept=left,
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value
