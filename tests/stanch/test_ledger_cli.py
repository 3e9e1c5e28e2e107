"""``stanch ledger verify`` and ``show``: exit codes and messages against a temp store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flows.models import ActionResult, ActionStatus, Verdict
from flows.record import Ledger, LedgerHead, exported_entry_hash, open_store
from integrations.capabilities import ActionReceipt
from stanch.ledger_cli import app
from tests.flows.factories import plan

INCIDENT = "INC-20261121-0007"


def executed(target: str, label: str) -> ActionResult:
    p = plan(target=target, target_label=label)
    return ActionResult(
        plan=p,
        plan_sha256=p.sha256,
        verdict=Verdict.APPROVAL,
        status=ActionStatus.EXECUTED,
        approved_by=["cli:alice"],
        vendor="crowdstrike",
        receipt=ActionReceipt(
            verb=p.verb,
            target=target,
            vendor="crowdstrike",
            changed=True,
            state="contained",
            vendor_request_id=f"req-{target}",
        ),
    )


@pytest.fixture
async def store_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """A store with three contained hosts, which the CLI finds through STANCH_DATABASE_URL."""
    path = tmp_path / "stanch.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with open_store(url) as store:
        ledger = Ledger(store)
        for i in range(1, 4):
            await ledger.append_action(executed(f"aid-{i}", f"WS-004{i}"))
    monkeypatch.setenv("STANCH_DATABASE_URL", url)
    yield path


async def head_of(path: Path) -> LedgerHead:
    async with open_store(f"sqlite+aiosqlite:///{path}") as store:
        return await Ledger(store).head()


async def stanch_ledger(*args: str) -> int:
    """Run ``stanch ledger <args>`` in-process; it runs its own event loop, so in a thread."""
    code = await asyncio.to_thread(app, list(args), result_action="return_value")
    assert isinstance(code, int)
    return code


def raw_sql(path: Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(statement)


async def test_verify_says_ok_with_count_and_head(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given an untouched ledger of three entries, When `stanch ledger verify` runs,
    Then it exits 0 and prints the count and the head hash on one line."""
    head = await head_of(store_file)
    assert await stanch_ledger("verify") == 0
    captured = capsys.readouterr()
    assert captured.out == f"ledger OK: 3 entries, head {head.entry_hash}\n"
    assert captured.err == ""


async def test_verify_names_an_edited_entry(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a ledger whose entry 2 had its vendor request id changed in the database,
    When `stanch ledger verify` runs,
    Then it exits 1 and names entry 2 with its incident, action and host."""
    raw_sql(store_file, "UPDATE ledger_entries SET vendor_request_id = 'forged' WHERE seq = 2")
    assert await stanch_ledger("verify") == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"entry 2 ({INCIDENT}, edr.contain_host WS-0042) was edited: hash mismatch\n"
    )
    assert captured.out == ""


async def test_verify_names_a_deleted_entry(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a ledger whose entry 2 was deleted, When verify runs,
    Then it exits 1 and says entry 2 was deleted."""
    raw_sql(store_file, "DELETE FROM ledger_entries WHERE seq = 2")
    assert await stanch_ledger("verify") == 1
    assert capsys.readouterr().err.startswith("entry 2 was deleted: gap in sequence")


async def test_verify_with_an_anchor_catches_a_cut_tail(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given the head printed earlier and the last entry deleted since,
    When verify runs without and then with --anchor,
    Then without it exits 0 (nothing inside the database shows the loss), with it exits 1
    naming entry 3."""
    anchor = str(await head_of(store_file))
    raw_sql(store_file, "DELETE FROM ledger_entries WHERE seq = 3")
    assert await stanch_ledger("verify") == 0
    assert await stanch_ledger("verify", "--anchor", anchor) == 1
    assert "entry 3 was deleted" in capsys.readouterr().err


async def test_verify_rejects_a_malformed_anchor(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a store, When verify is given an anchor that is not <seq>:<sha256>,
    Then it exits 2 and says what it expected."""
    assert await stanch_ledger("verify", "--anchor", "latest") == 2
    assert "expected <seq>:<sha256>" in capsys.readouterr().err


async def test_show_lists_an_incidents_entries(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given three contained hosts, When `stanch ledger show INCIDENT` runs,
    Then it exits 0 with a table naming each host, its vendor request id and the undo."""
    assert await stanch_ledger("show", INCIDENT) == 0
    out = capsys.readouterr().out
    for i in range(1, 4):
        assert f"WS-004{i}" in out and f"req-aid-{i}" in out
    assert "edr.release_host" in out


async def test_show_json_is_the_export(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given three entries, When `show --json` runs, Then it prints the three entries as JSON
    with their hashes."""
    assert await stanch_ledger("show", INCIDENT, "--json") == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert all(len(e["entry_hash"]) == 64 for e in entries)


async def test_show_an_unknown_incident_fails(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a store, When show is asked about an incident with no entries,
    Then it exits 2 (an unknown id, as every command treats one) and says so."""
    assert await stanch_ledger("show", "INC-20990101-0001") == 2
    assert "no ledger entries for INC-20990101-0001" in capsys.readouterr().err


async def test_anchor_prints_the_head_and_verify_checks_what_came_after_it(
    store_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given `stanch ledger anchor` printed and kept,
    When an entry is copied onto the end with its chain hash recomputed but no ledger key
    (what someone with database access alone can do),
    Then `verify --anchor` exits 1 naming the appended entry as forged; before the forgery
    it exits 0."""
    assert await stanch_ledger("anchor") == 0
    anchor = capsys.readouterr().out.strip()
    assert anchor == str(await head_of(store_file))
    assert await stanch_ledger("verify", "--anchor", anchor) == 0
    capsys.readouterr()
    async with open_store(f"sqlite+aiosqlite:///{store_file}") as store:
        [last] = [e for e in await Ledger(store).entries() if e.seq == 3]
    forged = {**last.to_json(), "seq": 4, "prev_hash": last.entry_hash}
    forged["idempotency_key"] = f"{INCIDENT}:edr.contain_host:aid-forged"
    forged["entry_hash"] = exported_entry_hash(forged)
    columns = [c for c in forged if c != "entry_mac"]
    with contextlib.closing(sqlite3.connect(store_file)) as conn, conn:
        conn.execute(
            f"INSERT INTO ledger_entries ({', '.join(columns)}) "  # noqa: S608 (own columns)
            f"VALUES ({', '.join('?' for _ in columns)})",
            [
                json.dumps(forged[c]) if isinstance(forged[c], dict | list) else forged[c]
                for c in columns
            ],
        )
    assert await stanch_ledger("verify", "--anchor", anchor) == 1
    assert capsys.readouterr().err.startswith("entry 4 (")
