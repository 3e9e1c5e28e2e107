"""The tamper-evident ledger: every executed action and approval decision, hash-chained.

Each entry's hash covers the previous entry's hash and the canonical JSON of its own
fields, so editing, deleting or reordering a stored entry breaks the chain at that entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    Index,
    Integer,
    Select,
    String,
    Text,
    UniqueConstraint,
    insert,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from flows.models import ActionPlan, ActionResult, ActionStatus, Stage, utcnow
from flows.store import Base, Store
from integrations.capabilities import INVERSE_VERBS, Capability

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""

# Outcomes that may be recorded only once per idempotency key: a vendor action that took
# effect (a failed or refused attempt may be followed by a later, successful one).
_ONCE_STATUSES = (ActionStatus.EXECUTED.value, ActionStatus.ALREADY_DONE.value)

# Appends serialise on a lock, so a collision on seq or prev_hash only happens when a
# writer skipped the lock (another dialect, an older stanch); one retry re-reads the head.
_APPEND_ATTEMPTS = 5


class EntryKind(StrEnum):
    """What a ledger entry records."""

    ACTION = "action"
    DECISION = "decision"


class Tamper(StrEnum):
    """How a stored chain was found broken."""

    EDITED = "edited"
    DELETED = "deleted"
    REORDERED = "reordered"


class LedgerEntryRow(Base):
    """One ledger entry as stored; see :class:`LedgerEntry` for the fields."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        # No two entries can chain from the same predecessor: the chain cannot fork even
        # if a writer bypasses the append lock.
        UniqueConstraint("prev_hash", name="uq_ledger_entries_prev_hash"),
        UniqueConstraint("entry_hash", name="uq_ledger_entries_entry_hash"),
        # DESIGN §3: an action's idempotency key (incident, verb, target) is unique among
        # the entries where it took effect, and an approval is decided once.
        Index(
            "uq_ledger_entries_once",
            "idempotency_key",
            unique=True,
            sqlite_where=text("kind = 'decision' OR status IN ('executed', 'already_done')"),
            postgresql_where=text("kind = 'decision' OR status IN ('executed', 'already_done')"),
        ),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(10))
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    capability: Mapped[str | None] = mapped_column(String(20))
    verb: Mapped[str | None] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(300))
    target_label: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    plan_sha256: Mapped[str | None] = mapped_column(String(64))
    plan_sha256s: Mapped[list[str]] = mapped_column(JSON)
    approval_id: Mapped[str | None] = mapped_column(String(40))
    approvers: Mapped[list[str]] = mapped_column(JSON)
    verdict: Mapped[str | None] = mapped_column(String(20))
    vendor: Mapped[str | None] = mapped_column(String(40))
    vendor_request_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(400))
    inverse_action: Mapped[str | None] = mapped_column(String(80))
    recorded_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


_TABLE = LedgerEntryRow.__table__
_COLUMNS: tuple[str, ...] = tuple(c.name for c in _TABLE.columns)
_JSON_COLUMNS = frozenset(c.name for c in _TABLE.columns if isinstance(c.type, JSON))

HASHED_FIELDS: tuple[str, ...] = tuple(c for c in _COLUMNS if c not in ("prev_hash", "entry_hash"))
"""The fields whose canonical JSON an entry's hash covers (all but the two hashes)."""


# Canonical form ---------------------------------------------------------------------------
def utc_iso(at: datetime) -> str:
    """``2026-11-21T10:15:00.123456Z``: UTC, microseconds always, ``Z`` suffix.

    A naive datetime is taken as UTC: SQLite hands back what stanch wrote (UTC) without
    its offset, PostgreSQL hands it back aware, and both must print the same.
    """
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8 as-is: the bytes that get hashed."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``prev_hash`` (ASCII hex) followed by the canonical JSON of ``fields``.

    Args:
        prev_hash: the previous entry's ``entry_hash`` (:data:`GENESIS_HASH` for the first).
        fields: the entry's :data:`HASHED_FIELDS`, JSON-ready (``recorded_at`` as
            :func:`utc_iso` text); other keys are ignored.
    """
    content = {name: fields.get(name) for name in HASHED_FIELDS}
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(content)).hexdigest()


def exported_entry_hash(entry: Mapping[str, Any]) -> str:
    """Recompute the hash of one entry from :meth:`Ledger.export` output.

    Lets a reader of an exported record check each entry without the database: the
    result must equal ``entry["entry_hash"]``.
    """
    return chain_hash(str(entry["prev_hash"]), entry)


def _record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row (driver values, JSON possibly still text) as a JSON-ready dict.

    Raises:
        ValueError: a JSON column or ``recorded_at`` does not parse (the row was edited).
    """
    record: dict[str, Any] = {}
    for name in _COLUMNS:
        value = raw[name]
        if name in _JSON_COLUMNS and isinstance(value, str | bytes):
            value = json.loads(value)
        elif name == "recorded_at":
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            if not isinstance(value, datetime):
                raise ValueError(f"recorded_at is {type(value).__name__}, not a datetime")
            value = utc_iso(value)
        record[name] = value
    return record


def _plain(row: Row[Any]) -> dict[str, Any]:
    return dict(row._mapping)


def _raw_select() -> Select[Any]:
    # JSON and datetime columns are read as the driver hands them over, not through
    # SQLAlchemy's result processors: an edited value that does not parse must become a
    # "this entry was edited" finding, not an exception halfway through the walk.
    return select(
        *(
            type_coerce(c, Text).label(c.name)
            if c.name in _JSON_COLUMNS or c.name == "recorded_at"
            else c
            for c in _TABLE.columns
        )
    )


def _once_clause() -> ColumnElement[bool]:
    return or_(
        LedgerEntryRow.kind == EntryKind.DECISION.value,
        LedgerEntryRow.status.in_(_ONCE_STATUSES),
    )


# Public values ----------------------------------------------------------------------------
class LedgerEntry(BaseModel):
    """One ledger entry.

    Attributes:
        seq: position in the chain, from 1, unique and gap-free per store.
        kind: ``action`` (a vendor call or its refusal) or ``decision`` (an approval).
        capability, verb, target, target_label, parameters: the action's plan (``None``
            and ``{}`` for decisions).
        plan_sha256: the hash of the plan that was executed (actions).
        plan_sha256s: the plans a decision answered (decisions).
        approval_id: the approval request a decision answers, when known.
        approvers: who authorised the action, or who decided.
        verdict: policy's verdict for an action (``unattended``, ``approval`` ...).
        vendor, vendor_request_id: which adapter acted and the vendor's id for the call.
        status: an :class:`ActionStatus` value, or the decision's status.
        reason: the approver's words (decisions).
        error: why an action failed or was refused.
        idempotency_key: ``incident:capability.verb:target`` for actions; the approval
            for decisions.
        inverse_action: ``<capability>.<verb>`` that undoes the action, ``None`` if
            irreversible.
        recorded_at: when the ledger wrote the entry, UTC.
        prev_hash: the previous entry's ``entry_hash``.
        entry_hash: :func:`chain_hash` of ``prev_hash`` and the other fields.
    """

    model_config = ConfigDict(frozen=True)

    seq: int
    kind: EntryKind
    incident_id: str
    tenant: str
    capability: str | None
    verb: str | None
    target: str | None
    target_label: str | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    plan_sha256: str | None
    plan_sha256s: list[str] = Field(default_factory=list)
    approval_id: str | None
    approvers: list[str] = Field(default_factory=list)
    verdict: str | None
    vendor: str | None
    vendor_request_id: str | None
    status: str
    reason: str | None
    error: str | None
    idempotency_key: str | None
    inverse_action: str | None
    recorded_at: datetime
    prev_hash: str
    entry_hash: str

    @property
    def action(self) -> str | None:
        """``edr.contain_host`` for actions, ``None`` for decisions."""
        if self.capability is None or self.verb is None:
            return None
        return f"{self.capability}.{self.verb}"

    @property
    def label(self) -> str:
        """How a person recognises the entry: ``INC-…, edr.contain_host WS-0042``."""
        return _label(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready, in the form that is hashed (``recorded_at`` in ``Z``)."""
        record = self.model_dump(mode="python")
        record["kind"] = self.kind.value
        record["recorded_at"] = utc_iso(self.recorded_at)
        return record

    def canonical_bytes(self) -> bytes:
        """The canonical JSON of :data:`HASHED_FIELDS` (what follows ``prev_hash``)."""
        record = self.to_json()
        return canonical_json({name: record[name] for name in HASHED_FIELDS})

    def computed_hash(self) -> str:
        """The hash these fields should have; equals ``entry_hash`` unless tampered with."""
        return chain_hash(self.prev_hash, self.to_json())


def _label(record: Mapping[str, Any]) -> str:
    incident = record.get("incident_id")
    if record.get("kind") == EntryKind.DECISION.value:
        return f"{incident}, decision {record.get('approval_id')} {record.get('status')}"
    target = record.get("target_label") or record.get("target")
    return f"{incident}, {record.get('capability')}.{record.get('verb')} {target}"


class LedgerHead(BaseModel):
    """The last entry's position and hash: keep it elsewhere to detect a cut-off tail.

    Its text form ``<seq>:<entry_hash>`` is what ``stanch ledger verify --anchor`` takes.
    """

    model_config = ConfigDict(frozen=True)

    seq: int = Field(ge=0)
    entry_hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def __str__(self) -> str:
        return f"{self.seq}:{self.entry_hash}"

    @classmethod
    def parse(cls, value: str) -> LedgerHead:
        """Read ``<seq>:<entry_hash>``.

        Raises:
            ValueError: not in that form.
        """
        seq, sep, entry_hash = value.partition(":")
        if not sep or not seq.isdigit():
            raise ValueError(f"expected <seq>:<sha256>, got {value!r}")
        return cls(seq=int(seq), entry_hash=entry_hash)


class VerifyReport(BaseModel):
    """The result of walking the chain.

    Attributes:
        ok: the chain is intact (and matches the anchor, if one was given).
        entries: how many entries are stored.
        head: the last stored entry (``seq`` 0 and the genesis hash when empty).
        broken_seq: the first entry, by sequence number, that is not as it was written.
        problem: how it broke.
        label: incident and action of the broken entry, when it is still there to read.
        detail: the evidence (``hash mismatch``, ``gap in sequence: entry 6 follows entry 4`` ...).
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    entries: int
    head: LedgerHead
    broken_seq: int | None = None
    problem: Tamper | None = None
    label: str | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        """One line for a person: ``ledger OK: …`` or ``entry 7 (…) was edited: …``."""
        if self.ok:
            return f"ledger OK: {self.entries} entries, head {self.head.entry_hash}"
        named = f"entry {self.broken_seq}"
        if self.label is not None:
            named += f" ({self.label})"
        problem = self.problem.value if self.problem is not None else "broken"
        return f"{named} was {problem}: {self.detail}"


class InverseAction(BaseModel):
    """What undoes an action: the fields of the inverse :class:`ActionPlan`.

    ``parameters`` holds only what the inverse verb takes, with a reason that points back
    at the ledger entry being reversed.
    """

    model_config = ConfigDict(frozen=True)

    capability: str
    verb: str
    target: str
    target_label: str
    parameters: dict[str, str | int | bool | None]


class InEffect(BaseModel):
    """An executed, reversible action whose inverse has not run since, and that inverse."""

    model_config = ConfigDict(frozen=True)

    entry: LedgerEntry
    inverse: InverseAction

    def inverse_plan(self) -> ActionPlan:
        """The plan that undoes this action. Undo, TTL expiry and a containment rollback
        all build it here, so they share one idempotency key and none undoes it twice."""
        return ActionPlan(
            tenant=self.entry.tenant,
            incident_id=self.entry.incident_id,
            capability=Capability(self.inverse.capability),
            verb=self.inverse.verb,
            target=self.inverse.target,
            target_label=self.inverse.target_label,
            parameters=self.inverse.parameters,
            stage=Stage.REMEDIATE,
        )


# The ledger -------------------------------------------------------------------------------
class Ledger:
    """Append to, verify and read the ledger in a store's database.

    Args:
        store_or_engine: an open :class:`Store` (from ``open_store``, which creates the
            table) or its engine.
        clock: where ``recorded_at`` comes from (tests pin it).
    """

    def __init__(
        self, store_or_engine: Store | AsyncEngine, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._engine = (
            store_or_engine.engine if isinstance(store_or_engine, Store) else store_or_engine
        )
        self._clock = clock

    # Appending ----------------------------------------------------------------------------
    async def append_action(
        self, result: ActionResult, *, approval_id: str | None = None
    ) -> LedgerEntry:
        """Record what happened to one plan (executed, already done, failed or refused).

        Idempotent for outcomes that took effect: appending an executed or already-done
        result whose idempotency key is already recorded returns the stored entry, so a
        retried task may append again without a duplicate.

        Args:
            result: the action's outcome; incident and tenant come from its plan.
            approval_id: the approval request that authorised it, when the caller knows.
        """
        plan = result.plan
        inverse = INVERSE_VERBS.get(plan.verb)
        fields: dict[str, Any] = {
            "kind": EntryKind.ACTION.value,
            "incident_id": plan.incident_id,
            "tenant": plan.tenant,
            "capability": plan.capability.value,
            "verb": plan.verb,
            "target": plan.target,
            "target_label": plan.target_label,
            "parameters": dict(plan.parameters),
            "plan_sha256": result.plan_sha256,
            "plan_sha256s": [],
            "approval_id": approval_id,
            "approvers": list(result.approved_by),
            "verdict": result.verdict.value,
            "vendor": result.vendor,
            "vendor_request_id": result.receipt.vendor_request_id if result.receipt else None,
            "status": result.status.value,
            "reason": None,
            "error": result.error,
            "idempotency_key": plan.idempotency_key,
            "inverse_action": f"{plan.capability.value}.{inverse}" if inverse else None,
        }
        return await self._append(fields)

    async def append_decision(
        self,
        *,
        approval_id: str,
        incident_id: str,
        tenant: str,
        status: str,
        approvers: Sequence[str],
        plan_sha256s: Sequence[str],
        reason: str,
    ) -> LedgerEntry:
        """Record an approval decision; a second decision for the same request is a no-op.

        Args:
            approval_id: the approval request (``APR-…``).
            incident_id: the incident it belongs to.
            tenant: the incident's tenant.
            status: ``approved``, ``denied``, ``partial``, ``expired`` or ``rejected``.
            approvers: who decided, as ``<channel>:<who>``.
            plan_sha256s: the plans the decision answered.
            reason: the approver's words, or why the decision was refused.
        """
        fields: dict[str, Any] = {
            "kind": EntryKind.DECISION.value,
            "incident_id": incident_id,
            "tenant": tenant,
            "capability": None,
            "verb": None,
            "target": None,
            "target_label": None,
            "parameters": {},
            "plan_sha256": None,
            "plan_sha256s": list(plan_sha256s),
            "approval_id": approval_id,
            "approvers": list(approvers),
            "verdict": None,
            "vendor": None,
            "vendor_request_id": None,
            "status": status,
            "reason": reason,
            "error": None,
            "idempotency_key": f"{incident_id}:decision:{approval_id}",
            "inverse_action": None,
        }
        return await self._append(fields)

    async def _append(self, fields: dict[str, Any]) -> LedgerEntry:
        for _ in range(_APPEND_ATTEMPTS - 1):
            try:
                return await self._append_once(fields)
            except IntegrityError:
                continue
        return await self._append_once(fields)

    async def _append_once(self, fields: dict[str, Any]) -> LedgerEntry:
        async with self._engine.connect() as conn:
            await self._lock(conn)
            once = fields["kind"] == EntryKind.DECISION.value or fields["status"] in _ONCE_STATUSES
            if once:
                existing = (
                    await conn.execute(
                        _raw_select()
                        .where(LedgerEntryRow.idempotency_key == fields["idempotency_key"])
                        .where(_once_clause())
                    )
                ).first()
                if existing is not None:
                    return LedgerEntry.model_validate(_record(_plain(existing)))
            head = (
                await conn.execute(
                    select(LedgerEntryRow.seq, LedgerEntryRow.entry_hash)
                    .order_by(LedgerEntryRow.seq.desc())
                    .limit(1)
                )
            ).first()
            seq, prev_hash = (head.seq + 1, head.entry_hash) if head else (1, GENESIS_HASH)
            # Taken under the lock, so recorded_at follows seq as far as the clock allows.
            recorded_at = self._clock()
            record = {**fields, "seq": seq, "recorded_at": utc_iso(recorded_at)}
            record["prev_hash"] = prev_hash
            record["entry_hash"] = chain_hash(prev_hash, record)
            # Stored as the same instant in UTC: SQLite drops the offset of what it stores.
            stored_at = datetime.fromisoformat(record["recorded_at"])
            await conn.execute(insert(LedgerEntryRow).values({**record, "recorded_at": stored_at}))
            await conn.commit()
        return LedgerEntry.model_validate(record)

    async def _lock(self, conn: AsyncConnection) -> None:
        # Appends must be serialised: two appends that read the same head would both chain
        # from it. Locking the last row (SELECT … FOR UPDATE) is not enough: an empty
        # ledger has no row to lock, and under READ COMMITTED the waiter gets the *old*
        # head back once the lock is released. So the lock is on the whole table for
        # writers (readers and `verify` are not blocked); the unique constraints on seq
        # and prev_hash remain as the guarantee, with a retry, for any other dialect.
        dialect = conn.dialect.name
        if dialect == "postgresql":
            table = conn.dialect.identifier_preparer.format_table(_TABLE)
            await conn.exec_driver_sql(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        elif dialect == "sqlite":
            # A deferred transaction that reads, then writes, fails with "database is
            # locked" when another writer committed in between (WAL cannot upgrade a stale
            # snapshot); IMMEDIATE takes the write lock first and waits out busy_timeout.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")

    # Reading ------------------------------------------------------------------------------
    async def head(self) -> LedgerHead:
        """The last entry's seq and hash (``0`` and the genesis hash when empty).

        Store it outside the database (the incident report, a ticket, a WORM bucket) and
        pass it back to :meth:`verify`: only then can a deleted tail be detected.
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(LedgerEntryRow.seq, LedgerEntryRow.entry_hash)
                    .order_by(LedgerEntryRow.seq.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return LedgerHead(seq=0, entry_hash=GENESIS_HASH)
        return LedgerHead(seq=row.seq, entry_hash=row.entry_hash)

    async def entries(self, incident_id: str | None = None) -> list[LedgerEntry]:
        """Entries in chain order, all or one incident's."""
        query = _raw_select().order_by(LedgerEntryRow.seq)
        if incident_id is not None:
            query = query.where(LedgerEntryRow.incident_id == incident_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [LedgerEntry.model_validate(_record(r._mapping)) for r in rows]

    async def export(self, incident_id: str) -> list[dict[str, Any]]:
        """One incident's entries as JSON-ready dicts, each checkable with
        :func:`exported_entry_hash`."""
        return [entry.to_json() for entry in await self.entries(incident_id)]

    async def in_effect(self, incident_id: str) -> list[InEffect]:
        """The incident's executed, reversible actions not undone since, oldest first.

        An executed action whose inverse is in effect on the same target cancels it (a
        release after a contain) and is not itself in effect; so does an inverse the vendor
        reports ``already_done``. An action reported ``already_done`` is never in effect:
        stanch did not cause that state, so undoing it is not stanch's call.
        """
        # Which parameters each verb takes lives with the executor; imported here so that
        # reading the ledger (the CLI) does not import Prefect.
        from flows.tasks import ACTION_VERBS

        live: dict[tuple[str, str], LedgerEntry] = {}
        for entry in await self.entries(incident_id):
            if entry.kind != EntryKind.ACTION or entry.status not in _ONCE_STATUSES:
                continue
            if entry.capability is None or entry.verb is None or entry.target is None:
                continue
            inverse = INVERSE_VERBS.get(entry.verb)
            if inverse is None:
                continue
            key = (entry.capability, entry.target)
            undone = live.get(key)
            if undone is not None and undone.verb == inverse:
                # Undone, by stanch or (already_done) by the vendor itself: a firewall
                # lifts an expired block on its own before the sweeper's unblock arrives.
                del live[key]
            elif entry.status == ActionStatus.EXECUTED.value:
                live[key] = entry
        effects: list[InEffect] = []
        for entry in sorted(live.values(), key=lambda e: e.seq):
            assert entry.capability is not None and entry.verb is not None  # filtered above
            assert entry.target is not None
            inverse = INVERSE_VERBS[entry.verb]
            takes = _inverse_parameters(ACTION_VERBS, entry.capability, inverse)
            parameters: dict[str, str | int | bool | None] = {
                name: entry.parameters.get(name) for name in takes
            }
            if "reason" in takes:
                parameters["reason"] = (
                    f"stanch undo {incident_id}: reverses ledger entry {entry.seq}"
                )
            effects.append(
                InEffect(
                    entry=entry,
                    inverse=InverseAction(
                        capability=entry.capability,
                        verb=inverse,
                        target=entry.target,
                        target_label=entry.target_label or entry.target,
                        parameters=parameters,
                    ),
                )
            )
        return effects

    # Verifying ----------------------------------------------------------------------------
    async def verify(self, *, anchor: LedgerHead | None = None) -> VerifyReport:
        """Walk the chain and name the first entry, by sequence number, that is broken.

        Without ``anchor`` this proves the stored entries are the ones written, in order,
        with none missing *between* them; entries cut off the end, or a chain rewritten
        from some entry onward with recomputed hashes, look intact. With ``anchor`` (a
        :meth:`head` kept elsewhere) both are detected too.

        Reads the whole ledger into memory: fine for an MDR team's years of actions.
        """
        async with self._engine.connect() as conn:
            query = _raw_select().order_by(LedgerEntryRow.seq)
            raws = [_plain(r) for r in (await conn.execute(query)).all()]
        by_hash = {r["entry_hash"]: r for r in raws}
        by_prev = {r["prev_hash"]: r for r in raws}
        head = (
            LedgerHead(seq=0, entry_hash=GENESIS_HASH)
            if not raws
            else LedgerHead.model_construct(seq=raws[-1]["seq"], entry_hash=raws[-1]["entry_hash"])
        )

        def broken(
            seq: int, problem: Tamper, detail: str, raw: Mapping[str, Any] | None
        ) -> VerifyReport:
            return VerifyReport(
                ok=False,
                entries=len(raws),
                head=head,
                broken_seq=seq,
                problem=problem,
                label=None if raw is None else _label(raw),
                detail=detail,
            )

        expected_seq, expected_prev = 1, GENESIS_HASH
        for raw in raws:
            seq = raw["seq"]
            try:
                computed = chain_hash(str(raw["prev_hash"]), _record(raw))
            except (ValueError, TypeError) as exc:
                return broken(seq, Tamper.EDITED, f"unreadable: {exc}", raw)
            intact = computed == raw["entry_hash"]
            if seq != expected_seq:
                # Rows come sorted by a unique seq, so this is a gap: entry expected_seq
                # is missing from its place.
                return broken(expected_seq, *_gap(raw, expected_seq, expected_prev, by_prev))
            if raw["prev_hash"] != expected_prev:
                before = expected_seq - 1
                if raw["prev_hash"] in by_hash:
                    origin = by_hash[raw["prev_hash"]]["seq"]
                    return broken(
                        seq,
                        Tamper.REORDERED,
                        f"it chains from entry {origin}, not entry {before}",
                        raw,
                    )
                if intact and before >= 1:
                    # This entry is as written, so the one before it is not the entry it
                    # was chained to: that one was rewritten (hash recomputed) or replaced.
                    previous = next(r for r in raws if r["seq"] == before)
                    return broken(
                        before,
                        Tamper.EDITED,
                        f"its hash is not the prev_hash recorded by entry {seq}",
                        previous,
                    )
                what = "genesis hash" if before == 0 else f"hash of entry {before}"
                return broken(seq, Tamper.EDITED, f"prev_hash is not the {what}", raw)
            if not intact:
                return broken(seq, Tamper.EDITED, "hash mismatch", raw)
            expected_seq, expected_prev = seq + 1, raw["entry_hash"]

        if anchor is not None and anchor.seq > 0:
            if head.seq < anchor.seq:
                first = head.seq + 1
                span = "" if first == anchor.seq else f"entries {first}-{anchor.seq} missing: "
                return broken(
                    first,
                    Tamper.DELETED,
                    f"{span}the ledger ends at entry {head.seq} "
                    f"but the anchored head is entry {anchor.seq}",
                    None,
                )
            anchored = next(r for r in raws if r["seq"] == anchor.seq)
            if anchored["entry_hash"] != anchor.entry_hash:
                return broken(
                    anchor.seq,
                    Tamper.EDITED,
                    "hash differs from the anchored head: the chain up to it was rewritten",
                    anchored,
                )
        return VerifyReport(ok=True, entries=len(raws), head=head)


def _gap(
    raw: Mapping[str, Any],
    expected_seq: int,
    expected_prev: str,
    by_prev: Mapping[str, Mapping[str, Any]],
) -> tuple[Tamper, str, Mapping[str, Any] | None]:
    """Why entry ``expected_seq`` is not in its place: renumbered, moved or deleted."""
    moved = by_prev.get(expected_prev)
    if moved is not None:
        # The entry that chained from the last good one is still there, under another
        # number: its seq column was edited (its hash matches the original number).
        try:
            original = {**_record(moved), "seq": expected_seq}
        except (ValueError, TypeError):
            return Tamper.REORDERED, f"it was moved to seq {moved['seq']}", moved
        if chain_hash(expected_prev, original) == moved["entry_hash"]:
            return Tamper.EDITED, f"hash mismatch: seq changed to {moved['seq']}", moved
        return Tamper.REORDERED, f"it was moved to seq {moved['seq']}", moved
    last = raw["seq"] - 1
    span = "" if last == expected_seq else f"entries {expected_seq}-{last} missing, "
    before = expected_seq - 1
    follows = f"follows entry {before}" if before else "is the first entry"
    return Tamper.DELETED, f"gap in sequence: {span}entry {raw['seq']} {follows}", None


def _inverse_parameters(
    verbs: Mapping[Any, Mapping[str, tuple[str, ...]]], capability: str, verb: str
) -> tuple[str, ...]:
    for cap, table in verbs.items():
        if str(cap) == capability:
            return table.get(verb, ())
    return ()


__all__ = [
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "EntryKind",
    "InEffect",
    "InverseAction",
    "Ledger",
    "LedgerEntry",
    "LedgerEntryRow",
    "LedgerHead",
    "Tamper",
    "VerifyReport",
    "canonical_json",
    "chain_hash",
    "exported_entry_hash",
    "utc_iso",
]
