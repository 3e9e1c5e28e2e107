"""The embedded server's SQLite patch: written for one Prefect, and what it changes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from stanch import prefect_sqlite


def test_the_patch_is_for_the_installed_prefect_and_its_exact_code() -> None:
    """Given the installed Prefect,
    When the patch checks what it replaces,
    Then it is the version and the very ``begin_transaction`` source it was written for.

    When this fails, Prefect changed (an upgrade, or the code itself): the embedded server
    now starts unpatched. Read the new ``AioSqliteConfiguration.begin_transaction``: if
    upstream begins SQLite write transactions IMMEDIATE itself, delete the patch; if not,
    re-check it against the new code and update ``WRITTEN_FOR`` and ``SOURCE_SHA256``."""
    assert prefect_sqlite.why_not_patched() is None


async def _read_then_write(url: str, path: Path) -> None:
    """One server transaction that reads, lets another connection commit, then writes."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    config = AioSqliteConfiguration(connection_url=url)
    engine = await config.engine()
    session = await config.session(engine)
    async with session, config.begin_transaction(session):
        await session.execute(text("SELECT count(*) FROM t"))

        def other_writer() -> None:
            # Another connection commits while this transaction holds its read snapshot
            # (the server's event and task-run writers do this all the time). It waits
            # up to its own busy timeout for the write lock.
            with sqlite3.connect(path, timeout=10) as other:
                other.execute("INSERT INTO t VALUES (2)")

        writer = asyncio.create_task(asyncio.to_thread(other_writer))
        await asyncio.sleep(0.3)
        await session.execute(text("INSERT INTO t VALUES (1)"))
    await writer
    await engine.dispose()


@pytest.fixture
def database(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "prefect.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
    return f"sqlite+aiosqlite:///{path}", path


async def test_a_read_then_write_transaction_waits_instead_of_failing(
    database: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a Prefect server transaction on SQLite that reads, while another connection
    writes and commits, and then writes itself (what creating a flow run does),
    When Prefect begins it as it does (DEFERRED), Then the write fails at once with
    "database is locked" (the server's 503 and the client's 2 s back-off);
    When the patch begins it IMMEDIATE, Then both writes succeed, one after the other."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    url, path = database
    with pytest.raises(OperationalError, match="database is locked"):
        await _read_then_write(url, path)

    monkeypatch.setattr(
        AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction
    )
    assert prefect_sqlite.apply()
    await _read_then_write(url, path)
    with sqlite3.connect(path) as conn:
        assert sorted(conn.execute("SELECT x FROM t").fetchall()) == [(1,), (2,), (2,)]
