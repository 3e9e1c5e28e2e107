"""Case changes in the store: status, assignee, notes, links, merges — each a ledger entry.

Every change runs inside :meth:`Ledger.append_case`: under the ledger's append lock the
case is read, the change is checked against :mod:`flows.record.cases`, the case tables are
written and the hash-chained entry is appended, all in one transaction. So a refused
change leaves nothing behind, two analysts closing the same case cannot both succeed, and
``stanch ledger verify`` covers notes and dispositions as it covers actions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.errors import CaseInputError
from flows.models import CaseStatus, Disposition, utcnow
from flows.record import events
from flows.record.case_views import (
    CaseListing,
    CaseRecord,
    incident_row,
    list_cases,
    read_case,
)
from flows.record.cases import (
    FLOW_ACTOR,
    NOTE_MAX_CHARS,
    REASON_MAX_CHARS,
    SUMMARY_MAX_CHARS,
    LinkKind,
    check_close,
    check_incident_id,
    check_open,
    check_reopen,
    clean_assignee,
    clean_text,
    flow_may_advance,
    parse_disposition,
)
from flows.record.correlation import lock_tenant
from flows.record.ledger import Ledger
from flows.record.merging import Moved, move_incident_contents
from flows.record.store import Store
from flows.record.tables import (
    CaseAssignmentRow,
    CaseLinkRow,
    CaseNoteRow,
    CaseTransitionRow,
    IncidentRow,
)

_INCIDENTS = cast(Table, IncidentRow.__table__)
_TRANSITIONS = cast(Table, CaseTransitionRow.__table__)
_NOTES = cast(Table, CaseNoteRow.__table__)
_ASSIGNMENTS = cast(Table, CaseAssignmentRow.__table__)
_LINKS = cast(Table, CaseLinkRow.__table__)


class CaseBook:
    """Change and read incidents' cases in a store.

    Every changing method takes ``actor`` (``cli:alice@host``, ``slack:U0123``,
    ``api:<token name>``, :data:`~flows.record.cases.FLOW_ACTOR`) and an optional
    ``tenant``: when given, an incident of another tenant is as unknown as one that does
    not exist.

    Args:
        store: an open store.
        clock: where the times of changes come from (tests pin it); the ledger entry and
            the case rows carry the same instant.
    """

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.ledger = Ledger(store, clock=clock)

    # changes ------------------------------------------------------------------------------
    async def advance(self, incident_id: str, status: CaseStatus, *, reason: str) -> bool:
        """Move the case forward to ``status`` if the flow may (see ``flow_may_advance``).

        Returns:
            ``True`` when the status changed; ``False`` when the case is already there or
            beyond it, or belongs to the analysts (closed, reopened).
        """
        moved = False

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            nonlocal moved
            row = await incident_row(conn, incident_id, None)
            if not flow_may_advance(row.status, status):
                raise _NoChange
            await _transition(conn, row, status, FLOW_ACTOR, reason, at, seq)
            moved = True
            return _entry(row, "advance", status, FLOW_ACTOR, reason, {"from": row.status})

        try:
            await self.ledger.append_case(write)
        except _NoChange:
            return False
        return moved

    async def assign(
        self, incident_id: str, assignee: str, *, actor: str, tenant: str | None = None
    ) -> None:
        """Give the case to ``assignee``.

        Raises:
            UnknownIncident: no such incident (of ``tenant``).
            CaseInputError: the assignee is empty or malformed.
            CaseConflict: the case is closed.
        """
        who = clean_assignee(assignee)

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            row = await incident_row(conn, incident_id, tenant)
            check_open(incident_id, row.status, "assign")
            await conn.execute(
                insert(_ASSIGNMENTS).values(
                    incident_id=row.id,
                    tenant=row.tenant,
                    assignee=who,
                    actor=actor,
                    at=at,
                    ledger_seq=seq,
                )
            )
            return _entry(row, "assign", row.status, actor, None, {"assignee": who})

        await self.ledger.append_case(write)

    async def note(
        self, incident_id: str, text: str, *, actor: str, tenant: str | None = None
    ) -> None:
        """Append a note (allowed on a closed case too: notes are annotations).

        Raises:
            UnknownIncident: no such incident (of ``tenant``).
            CaseInputError: the text is empty, longer than 10,000 characters, or holds
                control characters.
        """
        body = clean_text("text", text, NOTE_MAX_CHARS)

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            row = await incident_row(conn, incident_id, tenant)
            await conn.execute(
                insert(_NOTES).values(
                    incident_id=row.id,
                    tenant=row.tenant,
                    author=actor,
                    text=body,
                    at=at,
                    ledger_seq=seq,
                )
            )
            return _entry(row, "note", row.status, actor, body, {})

        await self.ledger.append_case(write)

    async def close(
        self,
        incident_id: str,
        *,
        disposition: Disposition | str | None,
        summary: str,
        actor: str,
        duplicate_of: str | None = None,
        tenant: str | None = None,
    ) -> None:
        """Close the case with a disposition and a summary.

        A ``duplicate`` closure names the incident it duplicates (same tenant) and links
        to it.

        Raises:
            UnknownIncident: no such incident, or the duplicated one is not the tenant's.
            CaseInputError: disposition missing or unknown, summary empty or too long,
                duplicate-of missing, malformed or itself.
            CaseConflict: the case is already closed.
        """
        chosen = parse_disposition(disposition)
        text = clean_text("summary", summary, SUMMARY_MAX_CHARS)

        closed: list[Any] = []

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            row = await incident_row(conn, incident_id, tenant)
            check_close(incident_id, row.status, chosen, duplicate_of)
            closed[:] = [row]
            if duplicate_of is not None:
                original = await incident_row(conn, duplicate_of, row.tenant, field="duplicate_of")
                await _link(conn, row, original.id, LinkKind.DUPLICATE_OF, actor, at, seq)
            await _transition(
                conn,
                row,
                CaseStatus.CLOSED,
                actor,
                text,
                at,
                seq,
                disposition=chosen,
                duplicate_of=duplicate_of,
            )
            return _entry(
                row,
                "close",
                CaseStatus.CLOSED,
                actor,
                text,
                {"from": row.status, "disposition": chosen.value, "duplicate_of": duplicate_of},
            )

        await self.ledger.append_case(write)
        [row] = closed
        events.incident_closed(
            incident_id=incident_id,
            tenant=row.tenant,
            severity=row.severity,
            playbook=row.playbook,
            disposition=chosen.value,
            actor=actor,
            duplicate_of=duplicate_of,
        )

    async def reopen(
        self, incident_id: str, *, reason: str, actor: str, tenant: str | None = None
    ) -> None:
        """Reopen a closed case; a reason is required.

        Raises:
            UnknownIncident: no such incident (of ``tenant``).
            CaseInputError: no reason.
            CaseConflict: the case is not closed.
        """
        why = clean_text("reason", reason, REASON_MAX_CHARS)

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            row = await incident_row(conn, incident_id, tenant)
            check_reopen(incident_id, row.status)
            await _transition(conn, row, CaseStatus.REOPENED, actor, why, at, seq)
            return _entry(row, "reopen", CaseStatus.REOPENED, actor, why, {"from": row.status})

        await self.ledger.append_case(write)

    async def link(
        self,
        incident_id: str,
        other_id: str,
        kind: LinkKind = LinkKind.RELATED,
        *,
        actor: str,
        tenant: str | None = None,
    ) -> None:
        """CaseLink the incident to another of the same tenant (``related`` or ``duplicate-of``).

        Raises:
            UnknownIncident: either incident is unknown (or another tenant's).
            CaseInputError: linking an incident to itself, or the link already exists.
        """
        check_incident_id("linked_id", other_id)
        if other_id == incident_id:
            raise CaseInputError("linked_id", "an incident cannot be linked to itself")
        if kind == LinkKind.MERGED_INTO:
            raise CaseInputError("kind", "merged-into links are made by merging")

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            row = await incident_row(conn, incident_id, tenant)
            other = await incident_row(conn, other_id, row.tenant, field="linked_id")
            await _link(conn, row, other.id, kind, actor, at, seq)
            return _entry(
                row, "link", row.status, actor, None, {"kind": kind.value, "to": other.id}
            )

        await self.ledger.append_case(write)

    async def merge(
        self,
        incident_id: str,
        *,
        into: str,
        actor: str,
        tenant: str | None = None,
        keep_executed: bool = False,
    ) -> Moved:
        """Merge the incident into ``into``: its alerts, entities and actions move there, and
        it is closed as a duplicate pointing at the survivor.

        Taken under the tenant's correlation lock too, so no intake joins an alert to the
        incident while it is being merged. With ``keep_executed`` (correlation's merges)
        actions that took effect stay with the incident they ran for and the entry lists
        them as ``kept_actions``.

        Raises:
            UnknownIncident: either incident is unknown (or another tenant's: merging
                across tenants is refused as if the other did not exist).
            CaseInputError: merging an incident into itself.
            CaseConflict: either case is closed.
        """
        check_incident_id("into", into)
        if into == incident_id:
            raise CaseInputError("into", "an incident cannot be merged into itself")
        moved: Moved | None = None

        async def write(conn: AsyncConnection, seq: int, at: datetime) -> dict[str, Any]:
            nonlocal moved
            row = await incident_row(conn, incident_id, tenant)
            await lock_tenant(conn, row.tenant)
            survivor = await incident_row(conn, into, row.tenant, field="into")
            check_open(incident_id, row.status, "merge")
            check_open(into, survivor.status, "merge into")
            moved = await move_incident_contents(
                conn, row.id, survivor.id, keep_executed=keep_executed
            )
            summary = f"merged into {survivor.id}"
            await _link(conn, row, survivor.id, LinkKind.MERGED_INTO, actor, at, seq)
            await _transition(
                conn,
                row,
                CaseStatus.CLOSED,
                actor,
                summary,
                at,
                seq,
                disposition=Disposition.DUPLICATE,
                duplicate_of=survivor.id,
            )
            return _entry(
                row,
                "merge",
                CaseStatus.CLOSED,
                actor,
                summary,
                {
                    "from": row.status,
                    "into": survivor.id,
                    "disposition": Disposition.DUPLICATE.value,
                    "alerts": moved.alerts,
                    "entities": moved.entities,
                    "actions": moved.actions,
                    **({"kept_actions": list(moved.kept)} if keep_executed else {}),
                },
            )

        await self.ledger.append_case(write)
        assert moved is not None  # set by write, which ran
        return moved

    # reading ------------------------------------------------------------------------------
    # reading ------------------------------------------------------------------------------
    async def get(self, incident_id: str, *, tenant: str | None = None) -> CaseRecord:
        """The incident's case with its whole history.

        Raises:
            UnknownIncident: no such incident (of ``tenant``).
        """
        return await read_case(self.store.engine, incident_id, tenant=tenant)

    async def list(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        assignee: str | None = None,
        since: datetime | None = None,
        limit: int = 500,
    ) -> list[CaseListing]:
        """Cases, newest first, filtered; ``assignee`` is the current one."""
        return await list_cases(
            self.store.engine,
            tenant=tenant,
            status=status,
            assignee=assignee,
            since=since,
            limit=limit,
        )


class _NoChange(Exception):
    """The flow's advance found nothing to do: roll back, append nothing."""


async def _transition(
    conn: AsyncConnection,
    row: Any,
    status: CaseStatus,
    actor: str,
    reason: str,
    at: datetime,
    seq: int,
    *,
    disposition: Disposition | None = None,
    duplicate_of: str | None = None,
) -> None:
    await conn.execute(
        insert(_TRANSITIONS).values(
            incident_id=row.id,
            tenant=row.tenant,
            from_status=row.status,
            to_status=status.value,
            actor=actor,
            reason=reason,
            disposition=disposition.value if disposition else None,
            duplicate_of=duplicate_of,
            at=at,
            ledger_seq=seq,
        )
    )
    await conn.execute(
        update(_INCIDENTS).where(_INCIDENTS.c.id == row.id).values(status=status.value)
    )


async def _link(
    conn: AsyncConnection,
    row: Any,
    other: str,
    kind: LinkKind,
    actor: str,
    at: datetime,
    seq: int,
) -> None:
    exists = (
        await conn.execute(
            select(_LINKS.c.kind).where(
                (_LINKS.c.incident_id == row.id)
                & (_LINKS.c.linked_id == other)
                & (_LINKS.c.kind == kind.value)
            )
        )
    ).first()
    if exists is not None:
        raise CaseInputError("linked_id", f"{row.id} is already {kind.value} {other}")
    await conn.execute(
        insert(_LINKS).values(
            incident_id=row.id,
            linked_id=other,
            kind=kind.value,
            tenant=row.tenant,
            actor=actor,
            at=at,
            ledger_seq=seq,
        )
    )


def _entry(
    row: Any,
    verb: str,
    status: str,
    actor: str,
    reason: str | None,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    return {
        "incident_id": row.id,
        "tenant": row.tenant,
        "verb": verb,
        "status": str(status),
        "approvers": [actor],
        "reason": reason,
        "parameters": parameters,
    }
