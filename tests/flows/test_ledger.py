"""The action ledger: hash chain, tamper detection, serialised appends, undo basis, export."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from flows.models import ActionResult, ActionStatus, Verdict
from flows.record import (
    GENESIS_HASH,
    HASHED_FIELDS,
    EntryKind,
    Ledger,
    LedgerEntryRow,
    LedgerHead,
    Tamper,
    exported_entry_hash,
    open_store,
)
from flows.record.entries import canonical_json
from integrations.capabilities import ActionReceipt, Capability
from tests.flows.factories import plan
from tests.postgres import BACKENDS, backend_store

INCIDENT = "INC-20261121-0007"
OTHER_INCIDENT = "INC-20261121-0008"


def result(
    verb: str = "contain_host",
    target: str = "aid-123",
    *,
    label: str = "WS-0042",
    capability: Capability = Capability.EDR,
    status: ActionStatus = ActionStatus.EXECUTED,
    incident_id: str = INCIDENT,
    parameters: dict[str, str | int | bool | None] | None = None,
    request_id: str | None = "req-1",
) -> ActionResult:
    """An action outcome as execute_action returns it."""
    p = plan(
        incident_id=incident_id,
        capability=capability,
        verb=verb,
        target=target,
        target_label=label,
        parameters={"reason": f"stanch {incident_id}"} if parameters is None else parameters,
    )
    receipt = ActionReceipt(
        verb=verb,
        target=target,
        vendor="crowdstrike",
        changed=status == ActionStatus.EXECUTED,
        state="done",
        vendor_request_id=request_id,
    )
    return ActionResult(
        plan=p,
        plan_sha256=p.sha256,
        verdict=Verdict.APPROVAL,
        status=status,
        approved_by=["cli:alice", "slack:bob"],
        vendor="crowdstrike",
        receipt=receipt if status in (ActionStatus.EXECUTED, ActionStatus.ALREADY_DONE) else None,
        error="EDR said no" if status == ActionStatus.FAILED else None,
    )


async def seed(ledger: Ledger) -> None:
    """Six entries of every shape: a decision, reversible and irreversible actions, a failure."""
    await ledger.append_decision(
        approval_id="APR-0123456789",
        incident_id=INCIDENT,
        tenant="acme",
        status="approved",
        approvers=["cli:alice"],
        plan_sha256s=["a" * 64, "b" * 64],
        reason="looks like ransomware",
    )
    await ledger.append_action(result(), approval_id="APR-0123456789")
    await ledger.append_action(
        result("suspend_user", "00u1", label="jdoe", capability=Capability.IDENTITY)
    )
    await ledger.append_action(
        result(
            "block_ip",
            "203.0.113.9",
            label="203.0.113.9",
            capability=Capability.FIREWALL,
            parameters={"ttl_seconds": 3600, "reason": "C2 größe ✓"},
        )
    )
    await ledger.append_action(
        result("revoke_sessions", "00u1", label="jdoe", capability=Capability.IDENTITY)
    )
    await ledger.append_action(
        result("contain_host", "aid-999", label="WS-0099", status=ActionStatus.FAILED)
    )


SEEDED = 6


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=BACKENDS)
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    async with backend_store(request.param, tmp_path) as store:
        yield Ledger(store)


@pytest.fixture(scope="module")
async def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file holding the six seeded entries, copied by each tampering test."""
    path = tmp_path_factory.mktemp("ledger") / "seeded.db"
    async with open_store(sqlite_url(path)) as store:
        await seed(Ledger(store))
    return path


@pytest.fixture
async def tampered(seeded_db: Path, tmp_path: Path) -> AsyncIterator[tuple[Ledger, Path]]:
    """A fresh copy of the seeded store, its ledger, and the file path for raw SQL."""
    path = tmp_path / "stanch.db"
    shutil.copy(seeded_db, path)
    async with open_store(sqlite_url(path)) as store:
        yield Ledger(store), path


def raw_sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL straight on the file with the stdlib driver: what an intruder would do."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(statement, params).fetchall()


# Both backends ----------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
async def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """The ledger of a migrated store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as store:
        yield Ledger(store)


# Appending and verifying ------------------------------------------------------------------
async def test_appended_entries_form_a_chain_that_verifies(any_ledger: Ledger) -> None:
    """Given six entries of every kind,
    When the ledger is read and verified,
    Then they are numbered 1..6, each chains from the one before (the first from genesis),
    each hash is its recomputed hash, and verify reports OK with the count and head."""
    await seed(any_ledger)
    entries = await any_ledger.entries()
    assert [e.seq for e in entries] == list(range(1, SEEDED + 1))
    assert entries[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    assert all(e.computed_hash() == e.entry_hash for e in entries)
    report = await any_ledger.verify()
    assert report.ok, report.message
    assert report.entries == SEEDED
    assert report.head == LedgerHead(seq=SEEDED, entry_hash=entries[-1].entry_hash)
    assert report.message == f"ledger OK: {SEEDED} entries, head {entries[-1].entry_hash}"


async def test_entries_record_inverse_vendor_id_and_decision(ledger: Ledger) -> None:
    """Given the seeded entries, When read back,
    Then reversible actions name their inverse, irreversible ones none, the vendor request
    id and approvers are kept, and the decision keeps its plans and reason."""
    await seed(ledger)
    by_seq = {e.seq: e for e in await ledger.entries()}
    decision = by_seq[1]
    assert decision.kind == EntryKind.DECISION
    assert (decision.approval_id, decision.status) == ("APR-0123456789", "approved")
    assert decision.plan_sha256s == ["a" * 64, "b" * 64]
    assert decision.reason == "looks like ransomware"
    contain = by_seq[2]
    assert contain.kind == EntryKind.ACTION and contain.action == "edr.contain_host"
    assert contain.inverse_action == "edr.release_host"
    assert contain.vendor_request_id == "req-1"
    assert contain.approvers == ["cli:alice", "slack:bob"]
    assert contain.approval_id == "APR-0123456789"
    assert contain.plan_sha256 == result().plan_sha256
    assert by_seq[3].inverse_action == "identity.unsuspend_user"
    assert by_seq[4].inverse_action == "firewall.unblock_ip"
    assert by_seq[5].inverse_action is None  # revoke_sessions cannot be undone
    assert (by_seq[6].status, by_seq[6].error) == ("failed", "EDR said no")


async def test_an_action_that_took_effect_is_recorded_once(ledger: Ledger) -> None:
    """Given an executed action already in the ledger,
    When the same outcome is appended again (a retried task replaying its result),
    Then the stored entry comes back and no second entry is written; a failed attempt
    followed by a successful one, however, is two entries."""
    first = await ledger.append_action(result())
    again = await ledger.append_action(result())
    assert again == first
    await ledger.append_action(result(target="aid-2", status=ActionStatus.FAILED))
    await ledger.append_action(result(target="aid-2"))
    assert [e.status for e in await ledger.entries()] == ["executed", "failed", "executed"]


async def test_a_decision_is_recorded_once(ledger: Ledger) -> None:
    """Given a recorded decision, When a second decision on the same request is appended,
    Then the first one stands and the ledger has one entry."""
    fields: dict[str, Any] = {
        "approval_id": "APR-1",
        "incident_id": INCIDENT,
        "tenant": "acme",
        "approvers": ["cli:alice"],
        "plan_sha256s": ["a" * 64],
        "reason": "ok",
    }
    first = await ledger.append_decision(status="approved", **fields)
    second = await ledger.append_decision(status="denied", **fields)
    assert second.status == "approved" and second.entry_hash == first.entry_hash
    assert (await ledger.head()).seq == 1


async def test_concurrent_appends_keep_one_valid_chain(any_ledger: Ledger) -> None:
    """Given 20 appends started at once (each on its own connection),
    When they all finish,
    Then they hold seq 1..20 with distinct predecessors and the chain verifies."""
    entries = await asyncio.gather(
        *(
            any_ledger.append_action(result(target=f"aid-{i}", label=f"WS-{i:04d}"))
            for i in range(20)
        )
    )
    assert sorted(e.seq for e in entries) == list(range(1, 21))
    assert len({e.prev_hash for e in entries}) == 20
    report = await any_ledger.verify()
    assert report.ok, report.message
    assert report.entries == 20


# Tampering --------------------------------------------------------------------------------
COLUMNS = [c.name for c in LedgerEntryRow.__table__.columns]
JSON_COLUMNS = {"parameters", "plan_sha256s", "approvers"}
HEX_COLUMNS = {"prev_hash", "entry_hash", "plan_sha256"}


def tamper(column: str, value: Any) -> Any:
    """A different value of the same stored type for ``column``."""
    if value is None:
        return "tampered"
    if isinstance(value, int):
        return value + 100
    if column == "recorded_at":
        moved = datetime.fromisoformat(value) + timedelta(seconds=1)
        return moved.strftime("%Y-%m-%d %H:%M:%S.%f")
    if column in JSON_COLUMNS:
        loaded = json.loads(value)
        return json.dumps([*loaded, "mallory"] if isinstance(loaded, list) else {**loaded, "x": 1})
    if column in HEX_COLUMNS:
        return value[:-1] + ("0" if value[-1] != "0" else "1")
    return value + "-x"


def test_every_column_is_covered_by_the_hash_or_is_a_hash() -> None:
    """Given the table, When its columns are listed,
    Then every one is hashed, or is one of the two chain hashes, or the MAC over them."""
    assert set(COLUMNS) == {*HASHED_FIELDS, "prev_hash", "entry_hash", "entry_mac"}


@pytest.mark.parametrize("seq", [1, 3, SEEDED], ids=["first", "middle", "last"])
@pytest.mark.parametrize("column", COLUMNS)
async def test_editing_any_column_of_any_row_is_detected(
    tampered: tuple[Ledger, Path], column: str, seq: int
) -> None:
    """Given the seeded ledger,
    When one column of one row is changed with a raw SQL UPDATE,
    Then verify fails, names that entry by its (original) sequence number, and says it
    was edited."""
    ledger, path = tampered
    [(before,)] = raw_sql(path, f"SELECT {column} FROM ledger_entries WHERE seq = ?", (seq,))  # noqa: S608
    after = tamper(column, before)
    assert after != before
    raw_sql(path, f"UPDATE ledger_entries SET {column} = ? WHERE seq = ?", (after, seq))  # noqa: S608
    report = await ledger.verify()
    assert not report.ok
    assert (report.broken_seq, report.problem) == (seq, Tamper.EDITED), report.message
    assert report.message.startswith(f"entry {seq} (INC-20261121-0007")
    assert " was edited: " in report.message


async def test_an_edit_names_the_entry_in_words(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger, When the vendor request id of the contain entry is changed,
    Then the message reads like the CLI's: entry, incident, action, target, hash mismatch."""
    ledger, path = tampered
    raw_sql(path, "UPDATE ledger_entries SET vendor_request_id = 'forged' WHERE seq = 2")
    report = await ledger.verify()
    assert report.message == (
        "entry 2 (INC-20261121-0007, edr.contain_host WS-0042) was edited: hash mismatch"
    )


async def test_unparseable_values_are_reported_not_raised(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger, When a JSON column and a timestamp are replaced by garbage,
    Then verify still returns a report naming the first such entry as edited."""
    ledger, path = tampered
    raw_sql(path, "UPDATE ledger_entries SET recorded_at = 'yesterday' WHERE seq = 4")
    raw_sql(path, "UPDATE ledger_entries SET parameters = '{not json' WHERE seq = 5")
    report = await ledger.verify()
    assert (report.broken_seq, report.problem) == (4, Tamper.EDITED)
    assert "unreadable" in report.detail


async def test_reformatted_json_is_not_an_edit(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger,
    When a JSON column is rewritten with other whitespace and key order but equal content
    (as a database migration or a JSONB column would),
    Then the chain still verifies: the hash covers the canonical form, not stored bytes."""
    ledger, path = tampered
    [(stored,)] = raw_sql(path, "SELECT parameters FROM ledger_entries WHERE seq = 4")
    loaded = json.loads(stored)
    rewritten = json.dumps(dict(reversed(list(loaded.items()))), indent=3, ensure_ascii=True)
    assert rewritten != stored
    raw_sql(path, "UPDATE ledger_entries SET parameters = ? WHERE seq = 4", (rewritten,))
    report = await ledger.verify()
    assert report.ok, report.message


async def test_deleting_a_middle_row_is_detected(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger, When entry 3 is deleted,
    Then verify names entry 3 as deleted, with the gap as evidence."""
    ledger, path = tampered
    raw_sql(path, "DELETE FROM ledger_entries WHERE seq = 3")
    report = await ledger.verify()
    assert (report.ok, report.broken_seq, report.problem) == (False, 3, Tamper.DELETED)
    assert report.message == "entry 3 was deleted: gap in sequence: entry 4 follows entry 2"


async def test_deleting_several_rows_names_the_first(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger, When entries 1 and 2 are deleted,
    Then verify names entry 1 as deleted."""
    ledger, path = tampered
    raw_sql(path, "DELETE FROM ledger_entries WHERE seq IN (1, 2)")
    report = await ledger.verify()
    assert (report.broken_seq, report.problem) == (1, Tamper.DELETED)
    assert report.detail == "gap in sequence: entries 1-2 missing, entry 3 is the first entry"


async def test_deleting_and_renumbering_is_detected(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger, When entry 3 is deleted and later entries renumbered to
    close the gap, Then verify names entry 3 (the renumbered one no longer matches)."""
    ledger, path = tampered
    raw_sql(path, "DELETE FROM ledger_entries WHERE seq = 3")
    for seq in range(4, SEEDED + 1):
        raw_sql(path, "UPDATE ledger_entries SET seq = ? WHERE seq = ?", (seq - 1, seq))
    report = await ledger.verify()
    assert not report.ok and report.broken_seq == 3


async def test_reordering_rows_is_detected(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger, When entries 3 and 4 swap sequence numbers,
    Then verify names entry 3 as reordered: it chains from the entry now numbered 4."""
    ledger, path = tampered
    raw_sql(path, "UPDATE ledger_entries SET seq = -1 WHERE seq = 3")
    raw_sql(path, "UPDATE ledger_entries SET seq = 3 WHERE seq = 4")
    raw_sql(path, "UPDATE ledger_entries SET seq = 4 WHERE seq = -1")
    report = await ledger.verify()
    assert (report.broken_seq, report.problem) == (3, Tamper.REORDERED)
    assert report.detail == "it chains from entry 4, not entry 2"


async def test_a_deleted_tail_needs_an_anchor(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger and its head kept elsewhere,
    When the last entry is deleted,
    Then verify on its own still says OK: every remaining entry is intact and in order,
    and nothing inside the database says an entry 6 ever existed. The same holds for a
    tail rewritten with recomputed hashes. Only a head stored outside the database (the
    incident report, a ticket, a WORM bucket) can show it: verify with that anchor names
    entry 6 as deleted."""
    ledger, path = tampered
    anchor = await ledger.head()
    assert anchor.seq == SEEDED
    raw_sql(path, "DELETE FROM ledger_entries WHERE seq = ?", (SEEDED,))
    alone = await ledger.verify()
    assert alone.ok and alone.entries == SEEDED - 1
    anchored = await ledger.verify(anchor=anchor)
    assert (anchored.ok, anchored.broken_seq, anchored.problem) == (False, SEEDED, Tamper.DELETED)
    assert anchored.message == (
        "entry 6 was deleted: the ledger ends at entry 5 but the anchored head is entry 6"
    )


async def test_a_rewritten_tail_is_caught_without_the_key(tampered: tuple[Ledger, Path]) -> None:
    """Given the seeded ledger and its head kept elsewhere,
    When the last entry is edited and its hash recomputed (a consistent forgery by
    someone with database access but not the ledger key),
    Then verify names entry 6 as edited, with or without the anchor: its MAC does not
    match its new hash."""
    ledger, path = tampered
    anchor = await ledger.head()
    [last] = [e for e in await ledger.entries() if e.seq == SEEDED]
    forged = {**last.to_json(), "status": "executed", "error": None}
    forged_hash = exported_entry_hash(forged)
    raw_sql(
        path,
        "UPDATE ledger_entries SET status = 'executed', error = NULL, entry_hash = ? WHERE seq = ?",
        (forged_hash, SEEDED),
    )
    for report in (await ledger.verify(), await ledger.verify(anchor=anchor)):
        assert (report.broken_seq, report.problem) == (SEEDED, Tamper.EDITED)
        assert "MAC does not verify" in report.detail


async def test_a_forged_entry_chained_after_the_anchor_is_caught(
    tampered: tuple[Ledger, Path],
) -> None:
    """Given the seeded ledger and its head kept as an anchor,
    When someone with database access appends an entry correctly chained onto the head
    (recomputed hash, no MAC, or a MAC made with another key),
    Then verify with the anchor names that entry: the chain is checked from the anchor
    on, not only up to it."""
    ledger, path = tampered
    anchor = await ledger.head()
    [last] = [e for e in await ledger.entries() if e.seq == SEEDED]
    appended = {
        **last.to_json(),
        "seq": SEEDED + 1,
        "prev_hash": last.entry_hash,
        "idempotency_key": "INC-20261121-0007:edr.release_host:forged",
        "status": "failed",
    }
    appended["entry_hash"] = exported_entry_hash(appended)
    columns = [c for c in COLUMNS if c != "entry_mac"]
    values = [
        json.dumps(appended[c]) if isinstance(appended[c], dict | list) else appended[c]
        for c in columns
    ]
    raw_sql(
        path,
        f"INSERT INTO ledger_entries ({', '.join(columns)}) "  # noqa: S608 (the table's own column names)
        f"VALUES ({', '.join('?' for _ in columns)})",
        tuple(values),
    )
    report = await ledger.verify(anchor=anchor)
    assert (report.ok, report.broken_seq, report.problem) == (False, SEEDED + 1, Tamper.FORGED)
    raw_sql(path, "UPDATE ledger_entries SET entry_mac = ? WHERE seq = ?", ("0" * 64, SEEDED + 1))
    report = await ledger.verify(anchor=anchor)
    assert (report.ok, report.broken_seq, report.problem) == (False, SEEDED + 1, Tamper.EDITED)


async def test_entries_from_before_macs_verify_but_none_may_follow_a_mac(
    tampered: tuple[Ledger, Path],
) -> None:
    """Given a ledger whose first entries predate MACs (a store upgraded past 0004),
    When verified, Then the MAC-less prefix is accepted;
    When an entry after one with a MAC lacks its MAC, Then it is named as forged, unless
    an anchor at or after it vouches for it."""
    ledger, path = tampered
    anchor = await ledger.head()
    raw_sql(path, "UPDATE ledger_entries SET entry_mac = NULL WHERE seq <= 3", ())
    assert (await ledger.verify()).ok
    raw_sql(path, "UPDATE ledger_entries SET entry_mac = NULL WHERE seq = 5", ())
    alone = await ledger.verify()
    assert (alone.broken_seq, alone.problem) == (5, Tamper.FORGED)
    assert (await ledger.verify(anchor=anchor)).ok


async def test_an_anchor_of_a_shorter_ledger_still_verifies(ledger: Ledger) -> None:
    """Given a head taken after three entries, When three more are appended,
    Then verify with that older anchor is OK (the ledger only grows)."""
    for i in range(3):
        await ledger.append_action(result(target=f"aid-{i}"))
    anchor = await ledger.head()
    for i in range(3, 6):
        await ledger.append_action(result(target=f"aid-{i}"))
    assert (await ledger.verify(anchor=anchor)).ok
    assert LedgerHead.parse(str(anchor)) == anchor


async def test_an_empty_ledger_verifies(ledger: Ledger) -> None:
    """Given no entries, When verified, Then OK with 0 entries and the genesis head."""
    report = await ledger.verify()
    assert (report.ok, report.entries, report.head.entry_hash) == (True, 0, GENESIS_HASH)


# Canonical form ---------------------------------------------------------------------------
def fixed_clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


ODD_RESULT_PARAMETERS: dict[str, str | int | bool | None] = {
    "reason": 'größe ✓ "quoted" \\ back',
    "ttl_seconds": 3600,
    "a_flag": True,
    "nothing": None,
}
# An aware, non-UTC time with microseconds: 10:15:00.000042 in UTC.
ODD_TIME = datetime(2026, 11, 21, 12, 15, 0, 42, tzinfo=timezone(timedelta(hours=2)))


def test_canonical_json_is_sorted_compact_utf8() -> None:
    """Given a dict with unsorted keys and non-ASCII text, When made canonical,
    Then keys are sorted, there is no whitespace, and text is raw UTF-8."""
    assert canonical_json({"b": 1, "a": ["ü", None]}) == '{"a":["ü",null],"b":1}'.encode()


async def test_canonical_bytes_survive_a_sqlite_round_trip(tmp_path: Path) -> None:
    """Given an entry written at an aware +02:00 time with odd parameters,
    When it is read back from SQLite (which returns datetimes naive),
    Then its canonical bytes are identical to those hashed at append time, and the time
    is in UTC with a Z."""
    async with open_store(sqlite_url(tmp_path / "stanch.db")) as store:
        ledger = Ledger(store, clock=fixed_clock(ODD_TIME))
        written = await ledger.append_action(
            result(
                "block_ip",
                "203.0.113.9",
                capability=Capability.FIREWALL,
                parameters=ODD_RESULT_PARAMETERS,
            )
        )
        [read] = await ledger.entries()
    assert read.canonical_bytes() == written.canonical_bytes()
    assert read.entry_hash == written.entry_hash == read.computed_hash()
    assert b'"recorded_at":"2026-11-21T10:15:00.000042Z"' in read.canonical_bytes()


@pytest.mark.postgres
async def test_sqlite_and_postgresql_hash_the_same_entry_alike(tmp_path: Path) -> None:
    """Given the same action appended at the same instant to a SQLite and a PostgreSQL
    ledger, When both are read back,
    Then their canonical bytes and entry hashes are identical."""
    entry = result(
        "block_ip", "203.0.113.9", capability=Capability.FIREWALL, parameters=ODD_RESULT_PARAMETERS
    )
    async with backend_store("postgresql", tmp_path) as store:
        pg = Ledger(store, clock=fixed_clock(ODD_TIME))
        await pg.append_action(entry)
        [from_pg] = await pg.entries()
        assert (await pg.verify()).ok
    async with open_store(sqlite_url(tmp_path / "stanch.db")) as store:
        lite = Ledger(store, clock=fixed_clock(ODD_TIME))
        await lite.append_action(entry)
        [from_sqlite] = await lite.entries()
    assert from_pg.canonical_bytes() == from_sqlite.canonical_bytes()
    assert from_pg.entry_hash == from_sqlite.entry_hash


# Undo basis and export --------------------------------------------------------------------
async def test_contain_then_release_leaves_nothing_in_effect(ledger: Ledger) -> None:
    """Given a host contained and then released within the incident,
    When asked what is in effect, Then nothing is."""
    await ledger.append_action(result("contain_host"))
    await ledger.append_action(result("release_host"))
    assert await ledger.in_effect(INCIDENT) == []


async def test_contain_alone_is_in_effect_with_release_as_inverse(ledger: Ledger) -> None:
    """Given a contained host, a failed and an already-done containment, an irreversible
    session revoke and another incident's containment,
    When asked what is in effect for the incident,
    Then only the containment stanch executed is, with release_host on the same host as
    its inverse and a reason pointing back at the entry."""
    contain = await ledger.append_action(result("contain_host"))
    await ledger.append_action(result("contain_host", "aid-9", status=ActionStatus.FAILED))
    await ledger.append_action(result("contain_host", "aid-8", status=ActionStatus.ALREADY_DONE))
    await ledger.append_action(
        result("revoke_sessions", "00u1", label="jdoe", capability=Capability.IDENTITY)
    )
    await ledger.append_action(result("contain_host", "aid-7", incident_id=OTHER_INCIDENT))
    [effect] = await ledger.in_effect(INCIDENT)
    assert effect.entry.seq == contain.seq
    inverse = effect.inverse
    assert (inverse.capability, inverse.verb, inverse.target) == ("edr", "release_host", "aid-123")
    assert inverse.target_label == "WS-0042"
    assert inverse.parameters == {
        "reason": f"stanch undo {INCIDENT}: reverses ledger entry {contain.seq}"
    }


async def test_inverse_parameters_are_those_the_inverse_verb_takes(ledger: Ledger) -> None:
    """Given an IP blocked with a TTL and a user suspended,
    When asked what is in effect,
    Then unblock_ip gets no parameters and unsuspend_user only a reason."""
    await ledger.append_action(
        result(
            "block_ip",
            "203.0.113.9",
            capability=Capability.FIREWALL,
            parameters={"ttl_seconds": 3600, "reason": "c2"},
        )
    )
    await ledger.append_action(
        result("suspend_user", "00u1", label="jdoe", capability=Capability.IDENTITY)
    )
    effects = await ledger.in_effect(INCIDENT)
    assert [(e.inverse.verb, sorted(e.inverse.parameters)) for e in effects] == [
        ("unblock_ip", []),
        ("unsuspend_user", ["reason"]),
    ]


async def test_export_is_json_ready_and_checkable_without_the_database(ledger: Ledger) -> None:
    """Given the seeded ledger and another incident's entry,
    When the incident is exported,
    Then only its entries come out, they serialise to JSON, and each entry's hash can be
    recomputed from the exported fields; changing an exported field breaks that."""
    await seed(ledger)
    await ledger.append_action(result(incident_id=OTHER_INCIDENT))
    exported = await ledger.export(INCIDENT)
    assert [e["seq"] for e in exported] == list(range(1, SEEDED + 1))
    assert json.loads(json.dumps(exported)) == exported
    assert all(exported_entry_hash(e) == e["entry_hash"] for e in exported)
    assert all(e["recorded_at"].endswith("Z") for e in exported)
    forged = {**exported[1], "target": "aid-other"}
    assert exported_entry_hash(forged) != forged["entry_hash"]
    assert isinstance(datetime.fromisoformat(exported[0]["recorded_at"]).tzinfo, type(UTC))


# Verifying from the last verified head ----------------------------------------------------
async def test_each_check_walks_only_the_entries_since_the_last_one(
    any_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given six entries verified once (the head is kept as the mark),
    When three more are appended and the ledger is checked again,
    Then the second check reads the mark's entry and the three new ones only, says OK
    with all nine counted, and moves the mark to entry 9; a check with nothing new reads
    only the mark's entry and leaves it."""
    from flows.record import chain

    await seed(any_ledger)
    first = await any_ledger.verify_since_checkpoint()
    assert first.ok and first.head == await any_ledger.head()
    for i in range(3):
        await any_ledger.append_action(result("block_hash", f"{i:064x}", label=f"h{i}"))
    walked: list[list[int]] = []
    walk = chain.walk_chain

    def counting(raws: list[dict[str, Any]], **kwargs: Any) -> Any:
        walked.append([r["seq"] for r in raws])
        return walk(raws, **kwargs)

    monkeypatch.setattr(chain, "walk_chain", counting)
    second = await any_ledger.verify_since_checkpoint()
    assert second.ok, second.message
    assert (second.entries, second.head) == (SEEDED + 3, await any_ledger.head())
    assert walked == [[7, 8, 9]]
    third = await any_ledger.verify_since_checkpoint()
    assert third.ok and third.head.seq == SEEDED + 3
    assert walked == [[7, 8, 9], []]


async def test_an_edit_after_the_mark_is_found_and_the_mark_stays(
    tampered: tuple[Ledger, Path],
) -> None:
    """Given the seeded ledger checked once at entry 4 and two entries appended since,
    When entry 5 is edited, Then the check names entry 5 as edited and the mark does not
    move; When the mark's own entry is edited or deleted, Then the check names entry 4."""
    ledger, path = tampered
    raw_sql(path, "DELETE FROM ledger_entries WHERE seq > 4")
    assert (await ledger.verify_since_checkpoint()).head.seq == 4
    await ledger.append_action(result("block_hash", "e" * 64, label="h5"))
    await ledger.append_action(result("block_hash", "f" * 64, label="h6"))
    raw_sql(path, "UPDATE ledger_entries SET vendor_request_id = 'forged' WHERE seq = 5")
    report = await ledger.verify_since_checkpoint()
    assert (report.ok, report.broken_seq, report.problem) == (False, 5, Tamper.EDITED)
    assert raw_sql(path, "SELECT seq FROM ledger_checkpoints") == [(4,)]

    raw_sql(path, "UPDATE ledger_entries SET vendor_request_id = 'forged' WHERE seq = 4")
    edited = await ledger.verify_since_checkpoint()
    assert (edited.broken_seq, edited.problem) == (4, Tamper.EDITED), edited.message
    raw_sql(path, "DELETE FROM ledger_entries WHERE seq >= 4")
    deleted = await ledger.verify_since_checkpoint()
    assert (deleted.broken_seq, deleted.problem) == (4, Tamper.DELETED), deleted.message
    assert "last verified" in deleted.message


async def test_an_edit_before_the_mark_is_left_to_the_full_walk(
    tampered: tuple[Ledger, Path],
) -> None:
    """Given the seeded ledger checked once (mark at entry 6),
    When entry 2, before the mark, is edited,
    Then the check since the mark still passes (it does not read entry 2 again), and the
    full walk (``stanch ledger verify``) names entry 2: the limit of a per-report check."""
    ledger, path = tampered
    assert (await ledger.verify_since_checkpoint()).ok
    raw_sql(path, "UPDATE ledger_entries SET vendor_request_id = 'forged' WHERE seq = 2")
    assert (await ledger.verify_since_checkpoint()).ok
    full = await ledger.verify()
    assert (full.ok, full.broken_seq) == (False, 2)
