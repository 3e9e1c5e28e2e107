"""Walking the ledger's hash chain: from the genesis, or from the last verified head.

:func:`walk_chain` checks a run of entries link by link (``Ledger.verify`` walks them
all); each incident's report uses :func:`verify_since_checkpoint`, which starts from the
head of the last walk that verified (kept in ``ledger_checkpoints``), so its cost is the
entries appended since.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.models import utcnow
from flows.record.entries import (
    _JSON_COLUMNS,
    _TABLE,
    GENESIS_HASH,
    LedgerHead,
    Tamper,
    VerifyReport,
    _label,
    _record,
    chain_hash,
)
from flows.record.tables import LedgerCheckpointRow, LedgerEntryRow

EntryCheck = Callable[[Mapping[str, Any]], tuple[Tamper, str] | None]
"""A check of one intact, well-chained entry beyond its hash (the ledger's MAC): ``None``
when it holds, else what is wrong."""


def plain(row: Row[Any]) -> dict[str, Any]:
    """A result row as a plain dict of column values."""
    return dict(row._mapping)


def raw_select() -> Select[Any]:
    """Every ledger column, JSON and time columns as stored text."""
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


async def verify_since_checkpoint(
    engine: AsyncEngine,
    *,
    verify_all: Callable[[], Awaitable[VerifyReport]],
    clock: Callable[[], datetime] = utcnow,
    check: Callable[[bool], EntryCheck] | None = None,
) -> VerifyReport:
    """Verify only what was appended since the last verification, then move the mark.

    The head of the last chain that verified is kept in ``ledger_checkpoints``; this
    walk starts from it: that entry must still be there, unedited (its hash as then,
    recomputed), and every later entry must chain on from it. So the cost is the
    entries since, not the whole ledger (a report per incident made a full walk
    quadratic over a tenant's life). Entries before the mark are not read again:
    ``verify_all`` (:meth:`Ledger.verify`, ``stanch ledger verify``) walks the whole
    chain, and is what runs while there is no mark yet. The mark moves only forward, and
    only on success. ``check``, given whether the entry at the mark carries a MAC, makes
    the check each later entry must pass too.
    """
    async with engine.connect() as conn:
        mark = (
            await conn.execute(
                select(LedgerCheckpointRow.seq, LedgerCheckpointRow.entry_hash).where(
                    LedgerCheckpointRow.name == _CHECKPOINT
                )
            )
        ).first()
        if mark is None:
            raws: list[dict[str, Any]] = []
        else:
            query = raw_select().where(LedgerEntryRow.seq >= mark.seq)
            raws = [
                plain(r) for r in (await conn.execute(query.order_by(LedgerEntryRow.seq))).all()
            ]
    if mark is None:
        report = await verify_all()
    else:
        mark_has_mac = bool(raws) and raws[0].get("entry_mac") is not None
        report = _walk_from_mark(
            raws,
            LedgerHead(seq=mark.seq, entry_hash=mark.entry_hash),
            check=check(mark_has_mac) if check else None,
        )
    if report.ok and report.head.seq > (mark.seq if mark else 0):
        await _move_checkpoint(engine, report.head, clock)
    return report


async def _move_checkpoint(
    engine: AsyncEngine, head: LedgerHead, clock: Callable[[], datetime]
) -> None:
    # One statement, so two reports verifying at once cannot interleave: insert the
    # mark, or move it forward; a mark already further on stays.
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    values = {"seq": head.seq, "entry_hash": head.entry_hash, "verified_at": clock()}
    statement = dialect.insert(LedgerCheckpointRow).values(name=_CHECKPOINT, **values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_=values,
        where=LedgerCheckpointRow.seq < head.seq,
    )
    async with engine.begin() as conn:
        await conn.execute(statement)


_CHECKPOINT = "chain"


def broken_at(
    walked: VerifyReport, seq: int, problem: Tamper, detail: str, raw: Mapping[str, Any] | None
) -> VerifyReport:
    """``walked`` (its entry count and head) as broken at entry ``seq``, and why."""
    return VerifyReport(
        ok=False,
        entries=walked.entries,
        head=walked.head,
        broken_seq=seq,
        problem=problem,
        label=None if raw is None else _label(raw),
        detail=detail,
    )


def _walk_from_mark(
    raws: list[dict[str, Any]], mark: LedgerHead, *, check: EntryCheck | None = None
) -> VerifyReport:
    """Check ``raws`` (entries from ``mark.seq`` on) against the mark, then walk on."""
    stored = LedgerHead.model_construct(
        seq=raws[-1]["seq"] if raws else mark.seq,
        entry_hash=raws[-1]["entry_hash"] if raws else mark.entry_hash,
    )
    bare = VerifyReport(ok=False, entries=stored.seq, head=stored)
    if not raws or raws[0]["seq"] != mark.seq:
        return broken_at(
            bare,
            mark.seq,
            Tamper.DELETED,
            f"entry {mark.seq}, the head when the ledger last verified, is gone",
            None,
        )
    first = raws[0]
    try:
        intact = chain_hash(str(first["prev_hash"]), _record(first)) == first["entry_hash"]
    except (ValueError, TypeError) as exc:
        return broken_at(bare, mark.seq, Tamper.EDITED, f"unreadable: {exc}", first)
    if not intact or first["entry_hash"] != mark.entry_hash:
        return broken_at(
            bare,
            mark.seq,
            Tamper.EDITED,
            "it is not the entry that was the head when the ledger last verified",
            first,
        )
    return walk_chain(
        raws[1:], first_seq=mark.seq + 1, prev_hash=mark.entry_hash, stored=stored.seq, check=check
    )


def walk_chain(
    raws: list[dict[str, Any]],
    *,
    first_seq: int,
    prev_hash: str,
    stored: int,
    check: EntryCheck | None = None,
) -> VerifyReport:
    """Walk ``raws`` (sorted by seq) as the chain from entry ``first_seq`` on.

    ``prev_hash`` is the hash the first of them must chain from; ``stored`` how many
    entries the ledger holds in all; ``check`` what else each intact entry must pass.
    """
    by_hash = {r["entry_hash"]: r for r in raws}
    by_prev = {r["prev_hash"]: r for r in raws}
    head = (
        LedgerHead.model_construct(seq=first_seq - 1, entry_hash=prev_hash)
        if not raws
        else LedgerHead.model_construct(seq=raws[-1]["seq"], entry_hash=raws[-1]["entry_hash"])
    )
    if not raws and first_seq == 1:
        head = LedgerHead(seq=0, entry_hash=GENESIS_HASH)
    walked = VerifyReport(ok=False, entries=stored, head=head)

    def broken(
        seq: int, problem: Tamper, detail: str, raw: Mapping[str, Any] | None
    ) -> VerifyReport:
        return broken_at(walked, seq, problem, detail, raw)

    expected_seq, expected_prev = first_seq, prev_hash
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
            previous = next((r for r in raws if r["seq"] == before), None)
            if intact and before >= 1 and previous is not None:
                # This entry is as written, so the one before it is not the entry it
                # was chained to: that one was rewritten (hash recomputed) or replaced.
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
        found = check(raw) if check is not None else None
        if found is not None:
            return broken(seq, *found, raw)
        expected_seq, expected_prev = seq + 1, raw["entry_hash"]
    return VerifyReport(ok=True, entries=stored, head=head)


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
