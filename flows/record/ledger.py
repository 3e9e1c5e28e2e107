"""The tamper-evident ledger: every executed action and approval decision, hash-chained.

Each entry's hash covers the previous entry's hash and the canonical JSON of its own
fields, so editing, deleting or reordering a stored entry breaks the chain at that entry.
Each entry also carries an HMAC of its hash under the ledger key (derived from the
approval key), so a correctly chained entry appended by someone with database access but
without the key is caught too. A head kept elsewhere (an anchor) covers entries written
before entries carried MACs, and catches a cut-off tail.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    insert,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from flows.models import ActionResult, ActionStatus, utcnow
from flows.record.chain import (
    EntryCheck,
    broken_at,
    plain,
    raw_select,
    verify_since_checkpoint,
    walk_chain,
)
from flows.record.entries import (
    _TABLE,
    GENESIS_HASH,
    EntryKind,
    InEffect,
    InverseAction,
    LedgerEntry,
    LedgerHead,
    Tamper,
    VerifyReport,
    _record,
    chain_hash,
    utc_iso,
)
from flows.record.store import Store
from flows.record.tables import LedgerEntryRow
from integrations.capabilities import INVERSE_VERBS

# Outcomes that may be recorded only once per idempotency key: a vendor action that took
# effect (a failed or refused attempt may be followed by a later, successful one).
_ONCE_STATUSES = (ActionStatus.EXECUTED.value, ActionStatus.ALREADY_DONE.value)

CaseWrite = Callable[[AsyncConnection, int, datetime], Awaitable[dict[str, Any]]]
"""Writes a case change on the ledger's connection, under its append lock, and returns the
entry's fields: ``(connection, seq the entry will have, recorded_at) -> fields``. Raising
rolls the change back with nothing appended."""

UNVERIFIED_ATTEMPT = "unverified"
"""The status of a decision entry recording a resume that could not be verified."""

# Appends serialise on a lock, so a collision on seq or prev_hash only happens when a
# writer skipped the lock (another dialect, an older stanch); one retry re-reads the head.
_APPEND_ATTEMPTS = 5


def _once_clause() -> ColumnElement[bool]:
    return or_(
        LedgerEntryRow.kind == EntryKind.DECISION.value,
        LedgerEntryRow.status.in_(_ONCE_STATUSES),
    )


# The ledger -------------------------------------------------------------------------------
class Ledger:
    """Append to, verify and read the ledger in a store's database.

    Args:
        store_or_engine: an open :class:`Store` (from ``open_store``, which creates the
            table) or its engine.
        clock: where ``recorded_at`` comes from (tests pin it).
        key: the ledger key; by default derived from the approval key of the settings
            (``STANCH_APPROVAL_SECRET`` or the key file in ``STANCH_HOME``).
    """

    def __init__(
        self,
        store_or_engine: Store | AsyncEngine,
        *,
        clock: Callable[[], datetime] = utcnow,
        key: bytes | None = None,
    ) -> None:
        self._engine = (
            store_or_engine.engine if isinstance(store_or_engine, Store) else store_or_engine
        )
        self._clock = clock
        self._key = key

    def _mac(self, entry_hash: str) -> str:
        if self._key is None:
            from flows.settings import load_settings

            self._key = ledger_key(load_settings().approval_key())
        return hmac.new(self._key, entry_hash.encode("ascii"), hashlib.sha256).hexdigest()

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

    async def append_case(self, write: CaseWrite) -> LedgerEntry:
        """Record a case change and its rows in one transaction.

        ``write`` runs under the append lock, so it sees the case as no concurrent change
        can alter it: it checks the change is allowed (raising when not), writes the case
        tables on the connection it is given, and returns the entry's fields (``kind``
        ``case``). The rows and the entry commit together or not at all.
        """
        return await self._append(write)

    async def append_attempt(
        self,
        *,
        approval_id: str,
        attempt: int,
        incident_id: str,
        tenant: str,
        claimed_by: str,
        plan_sha256s: Sequence[str],
        problem: str,
    ) -> LedgerEntry:
        """Record a resume whose decision could not be verified; the request stays open.

        Args:
            approval_id: the approval request the resume claimed to answer.
            attempt: which resume of that request, from 1 (once per attempt).
            incident_id: the incident it belongs to.
            tenant: the incident's tenant.
            claimed_by: who the decision said decided, as ``unverified:<who>``.
            plan_sha256s: the plans the request asks about.
            problem: why the decision was not accepted.
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
            "approvers": [claimed_by],
            "verdict": None,
            "vendor": None,
            "vendor_request_id": None,
            "status": UNVERIFIED_ATTEMPT,
            "reason": problem,
            "error": None,
            "idempotency_key": f"{incident_id}:attempt:{approval_id}:{attempt}",
            "inverse_action": None,
        }
        return await self._append(fields)

    async def _append(self, fields: dict[str, Any] | CaseWrite) -> LedgerEntry:
        for _ in range(_APPEND_ATTEMPTS - 1):
            try:
                return await self._append_once(fields)
            except IntegrityError:
                continue
        return await self._append_once(fields)

    async def _append_once(self, given: dict[str, Any] | CaseWrite) -> LedgerEntry:
        async with self._engine.connect() as conn:
            await self._lock(conn)
            fields = given if isinstance(given, dict) else {"kind": EntryKind.CASE.value}
            once = fields["kind"] == EntryKind.DECISION.value or (
                fields["kind"] == EntryKind.ACTION.value and fields["status"] in _ONCE_STATUSES
            )
            if once:
                existing = (
                    await conn.execute(
                        raw_select()
                        .where(LedgerEntryRow.idempotency_key == fields["idempotency_key"])
                        .where(_once_clause())
                    )
                ).first()
                if existing is not None:
                    return LedgerEntry.model_validate(_record(plain(existing)))
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
            if not isinstance(given, dict):
                fields = _case_fields(await given(conn, seq, recorded_at))
            record = {**fields, "seq": seq, "recorded_at": utc_iso(recorded_at)}
            record["prev_hash"] = prev_hash
            record["entry_hash"] = chain_hash(prev_hash, record)
            # Stored as the same instant in UTC: SQLite drops the offset of what it stores.
            stored_at = datetime.fromisoformat(record["recorded_at"])
            await conn.execute(
                insert(LedgerEntryRow).values(
                    {
                        **record,
                        "recorded_at": stored_at,
                        "entry_mac": self._mac(record["entry_hash"]),
                    }
                )
            )
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
        query = raw_select().order_by(LedgerEntryRow.seq)
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
        from flows.models import ACTION_VERBS

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
        """Walk the whole chain and name the first entry, by sequence number, that is broken.

        Every entry must chain from the one before it and carry a MAC made with the ledger
        key, so an edited, deleted, moved or forged entry is named wherever it is, even one
        correctly chained onto the end. Entries from before stanch gave entries MACs (a
        store upgraded past revision 0004) are accepted without one until the first entry
        that has one. With ``anchor`` (a :meth:`head` kept elsewhere) a cut-off tail is
        caught too, and entries up to the anchor may lack a MAC: its hash vouches for them.

        Reads the whole ledger into memory: fine for an MDR team's years of actions.
        """
        async with self._engine.connect() as conn:
            query = raw_select().order_by(LedgerEntryRow.seq)
            raws = [plain(r) for r in (await conn.execute(query)).all()]
        walked = walk_chain(
            raws,
            first_seq=1,
            prev_hash=GENESIS_HASH,
            stored=len(raws),
            check=self._mac_check(anchor, macs_seen=False),
        )
        if not walked.ok:
            return walked
        head = walked.head

        def broken(
            seq: int, problem: Tamper, detail: str, raw: Mapping[str, Any] | None
        ) -> VerifyReport:
            return broken_at(walked, seq, problem, detail, raw)

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
        return walked

    async def verify_since_checkpoint(self) -> VerifyReport:
        """Verify the entries appended since the last verification, then move its mark.

        See :func:`flows.record.chain.verify_since_checkpoint`; :meth:`verify` walks the
        whole chain. The entries walked must carry MACs as in :meth:`verify` (once the
        entry at the mark has one, every later one must).
        """
        return await verify_since_checkpoint(
            self._engine,
            verify_all=self.verify,
            clock=self._clock,
            check=lambda mark_has_mac: self._mac_check(None, macs_seen=mark_has_mac),
        )

    def _mac_check(self, anchor: LedgerHead | None, *, macs_seen: bool) -> EntryCheck:
        """The per-entry MAC check of a walk (see :meth:`_mac_problem`)."""
        seen = macs_seen

        def check(raw: Mapping[str, Any]) -> tuple[Tamper, str] | None:
            nonlocal seen
            problem = self._mac_problem(raw, anchor, legacy=not seen)
            seen = seen or raw.get("entry_mac") is not None
            if problem is None:
                return None
            return (Tamper.FORGED if raw.get("entry_mac") is None else Tamper.EDITED), problem

        return check

    def _mac_problem(
        self, raw: Mapping[str, Any], anchor: LedgerHead | None, *, legacy: bool
    ) -> str | None:
        """Why an entry's MAC does not vouch for it, or ``None``.

        An entry without a MAC is accepted only up to the anchor, or among the entries
        written before stanch gave entries MACs (no entry before it has one): after the
        first entry with a MAC, every entry must have one.
        """
        mac = raw.get("entry_mac")
        if mac is None:
            if legacy or (anchor is not None and raw["seq"] <= anchor.seq):
                return None  # written before entries carried a MAC
            return "it carries no MAC: not written by stanch with this ledger key"
        if not hmac.compare_digest(str(mac), self._mac(str(raw["entry_hash"]))):
            return "its MAC does not verify: not written by stanch with this ledger key"
        return None


def ledger_key(approval_key: bytes) -> bytes:
    """The key of the ledger's entry MACs, derived from the approval key (one secret to
    keep, two uses kept apart)."""
    return hmac.new(approval_key, b"stanch ledger entry mac v1", hashlib.sha256).digest()


_CASE_DEFAULTS: dict[str, Any] = {
    "kind": EntryKind.CASE.value,
    "capability": None,
    "target": None,
    "target_label": None,
    "parameters": {},
    "plan_sha256": None,
    "plan_sha256s": [],
    "approval_id": None,
    "approvers": [],
    "verdict": None,
    "vendor": None,
    "vendor_request_id": None,
    "reason": None,
    "error": None,
    "idempotency_key": None,
    "inverse_action": None,
}


def _case_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A case entry's fields: what the change set, the rest empty, kind ``case``."""
    unknown = set(fields) - set(_CASE_DEFAULTS) - {"incident_id", "tenant", "verb", "status"}
    if unknown:
        raise ValueError(f"not ledger fields: {sorted(unknown)}")
    return {**_CASE_DEFAULTS, **fields, "kind": EntryKind.CASE.value}


def _inverse_parameters(
    verbs: Mapping[Any, Mapping[str, tuple[str, ...]]], capability: str, verb: str
) -> tuple[str, ...]:
    for cap, table in verbs.items():
        if str(cap) == capability:
            return table.get(verb, ())
    return ()
