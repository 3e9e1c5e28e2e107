"""The store's Alembic migrations: head matches the models, old stores are adopted, and
concurrent openers of a fresh store all succeed; on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, column, inspect, select, table, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flows.models import Stage
from flows.record import Base, IncidentRow, Store, open_store
from flows.record.migrations import (
    BASELINE,
    VERSION_TABLE,
    SchemaError,
    alembic_config,
    current_revisions,
    head_revisions,
)
from tests.flows.factories import incident
from tests.postgres import BACKENDS, PG_URL, pg_schema

HEAD = "0007_intel_cache"
VERSIONS = table(VERSION_TABLE, column("version_num"))
STORE_TABLES = {
    "incidents",
    "actions",
    "approvals",
    "approval_slack",
    "approval_votes",
    "stage_events",
    "dead_letters",
}
INTAKE_AND_LEDGER_TABLES = {
    "ledger_entries",
    "alerts",
    "incident_entities",
    "incident_triage",
    "cursors",
}
LATER_TABLES = {  # created by revisions after the baseline
    "incident_summaries",
    "case_transitions",
    "case_notes",
    "case_assignments",
    "case_links",
    "sla_events",
    "approval_attempts",
    "budget_claims",
    "ledger_checkpoints",
    "incident_starts",
    "incident_hunts",
    "intel_cache",
    "incident_intel",
}
LATER_INCIDENT_COLUMNS = (
    "proposed_disposition",
    "proposed_disposition_by",
    "proposed_disposition_reason",
    "proposed_disposition_at",
)


@dataclass
class Target:
    """Where a store lives: a URL and the driver arguments (a PostgreSQL schema)."""

    backend: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    def engine(self) -> AsyncEngine:
        """A plain engine on the target, without migrating anything."""
        return create_async_engine(self.url, connect_args=self.connect_args)

    def store(self) -> contextlib.AbstractAsyncContextManager[Store]:
        return open_store(self.url, connect_args=self.connect_args)


@pytest.fixture(params=BACKENDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    """An empty SQLite file, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}")
        return
    async with pg_schema("stanch_migrations") as connect_args:
        yield Target("postgresql", PG_URL, connect_args)


async def run(target: Target, fn: Any) -> Any:
    """Run ``fn(sync_connection)`` on the target and commit."""
    engine = target.engine()
    try:
        async with engine.connect() as conn:
            value = await conn.run_sync(fn)
            await conn.commit()
        return value
    finally:
        await engine.dispose()


def differences(connection: Connection) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, Base.metadata))


def tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def legacy_schema(names: set[str]) -> Any:
    """What ``create_all`` made before migrations: the named tables, incidents without
    ``playbook`` (the column revision 0002 adds) and the proposed disposition, actions
    without ``request_sent`` (0010), ledger entries without ``entry_mac`` (0004), dead
    letters without ``raw`` (0011)."""

    def create(connection: Connection) -> None:
        Base.metadata.create_all(
            connection, tables=[Base.metadata.tables[name] for name in sorted(names)]
        )
        for name in ("playbook", *LATER_INCIDENT_COLUMNS):
            connection.execute(text(f"ALTER TABLE incidents DROP COLUMN {name}"))
        if "actions" in names:
            connection.execute(text("ALTER TABLE actions DROP COLUMN request_sent"))
        if "ledger_entries" in names:
            connection.execute(text("ALTER TABLE ledger_entries DROP COLUMN entry_mac"))
        if "dead_letters" in names:
            connection.execute(text("ALTER TABLE dead_letters DROP COLUMN raw"))

    return create


# Head and models --------------------------------------------------------------------------
async def test_head_revision_matches_the_models(target: Target) -> None:
    """Given a store created by the migrations alone,
    When autogenerate compares it with the models (every table module registered),
    Then it finds nothing to change: the revisions spell out exactly the models' tables,
    columns, types, indexes and constraints."""
    async with target.store():
        pass
    assert await run(target, differences) == []
    assert await run(target, current_revisions) == {HEAD} == head_revisions()


async def test_differences_are_found_when_the_schema_lags_the_models(target: Target) -> None:
    """Given a store left at the baseline (no playbook column, no summaries or ledger
    checkpoints table, no request_sent column),
    When compared with the models, Then what is missing is reported: the comparison
    above can fail."""

    def baseline(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), BASELINE)

    await run(target, baseline)
    found = {
        (d[0], d[2], d[3].name) if d[0] == "add_column" else (d[0], d[1].name)
        for d in await run(target, differences)
    }
    indexed = ("case_transitions", "case_notes", "case_assignments", "sla_events")
    assert found == (
        {("add_column", "incidents", "playbook")}
        | {("add_table", name) for name in LATER_TABLES}
        | {("add_index", f"ix_{name}_incident_id") for name in indexed}
        | {("add_column", "actions", "request_sent")}
        | {("add_column", "incidents", c) for c in LATER_INCIDENT_COLUMNS}
        | {("add_index", "ix_budget_claims_window"), ("add_column", "ledger_entries", "entry_mac")}
        | {("add_index", "ix_incident_starts_started_at"), ("add_column", "dead_letters", "raw")}
        | {("add_index", "ix_intel_cache_expires_at")}
    )


async def test_the_version_table_is_stanchs_own_and_in_the_stores_schema(
    target: Target,
) -> None:
    """Given a fresh store (on PostgreSQL, in a schema of its own on the search_path),
    When opened, Then its revision is kept in stanch_alembic_version (not alembic_version,
    which a Prefect server sharing the database uses) in that same schema."""
    async with target.store():
        pass

    def where(connection: Connection) -> tuple[set[str], str | None]:
        schema = None
        if connection.dialect.name == "postgresql":
            schema = connection.execute(
                text("SELECT table_schema FROM information_schema.tables WHERE table_name = :t"),
                {"t": VERSION_TABLE},
            ).scalar_one()
            assert schema == connection.execute(text("SELECT current_schema()")).scalar_one()
        return tables(connection), schema

    present, schema = await run(target, where)
    assert VERSION_TABLE in present and "alembic_version" not in present
    assert present == STORE_TABLES | INTAKE_AND_LEDGER_TABLES | LATER_TABLES | {VERSION_TABLE}
    if target.backend == "postgresql":
        assert schema is not None and schema.startswith("stanch_migrations_")


async def test_downgrade_to_the_baseline_and_back(target: Target) -> None:
    """Given a store at head with an incident, When downgraded to the baseline,
    Then the playbook column is gone and the incident kept; upgraded again, it is back."""
    async with target.store() as store:
        await store.save_incident(incident(1))

    def down(connection: Connection) -> set[str]:
        command.downgrade(alembic_config(connection), BASELINE)
        return {c["name"] for c in inspect(connection).get_columns("incidents")}

    assert "playbook" not in await run(target, down)
    assert await run(target, current_revisions) == {BASELINE}
    async with target.store() as store:
        row = await store.get_incident(incident(1).id)
        assert row is not None and row.playbook is None
    assert await run(target, differences) == []


async def test_the_flows_old_statuses_become_case_statuses_and_back(target: Target) -> None:
    """Given a store at 0003 whose incidents the flow marked open, contained, resolved
    and undone,
    When upgraded to 0006, Then they read new, contained, awaiting-closure and
    awaiting-closure (a written report never meant a closed case); downgraded again,
    an awaiting-closure incident is "resolved" as before."""
    async with target.store() as store:
        for n in range(1, 5):
            await store.save_incident(incident(n))
    old = {1: "open", 2: "contained", 3: "resolved", 4: "undone"}

    def back_to_0003(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0003_incident_summaries")
        for n, status in old.items():
            connection.execute(
                update(table("incidents", column("id"), column("status")))
                .where(column("id") == incident(n).id)
                .values(status=status)
            )

    await run(target, back_to_0003)
    async with target.store() as store:
        statuses = {n: (await store.get_incident(incident(n).id)).status for n in old}  # type: ignore[union-attr]
    assert statuses == {1: "new", 2: "contained", 3: "awaiting-closure", 4: "awaiting-closure"}

    def down_again(connection: Connection) -> Any:
        command.downgrade(alembic_config(connection), "0003_incident_summaries")
        return connection.execute(
            select(column("status"))
            .select_from(table("incidents"))
            .where(column("id") == incident(3).id)
        ).scalar_one()

    assert await run(target, down_again) == "resolved"


# Adopting stores made by create_all --------------------------------------------------------
async def test_a_create_all_store_is_stamped_then_upgraded(target: Target) -> None:
    """Given a store made by the old create_all (every table, no version table) holding
    an incident,
    When opened, Then it is stamped at the baseline and upgraded to head: the incident is
    kept, its playbook is NULL, its old "open" status is now the case status "new", and
    the schema matches the models."""
    await run(target, legacy_schema(STORE_TABLES | INTAKE_AND_LEDGER_TABLES))
    old = incident(1)

    def insert_old(connection: Connection) -> None:
        connection.execute(
            text(
                "INSERT INTO incidents (id, tenant, title, severity, status, created_at,"
                " document) VALUES (:id, :tenant, :title, 5, 'open', :at, :doc)"
            ),
            {
                "id": old.id,
                "tenant": old.tenant,
                "title": old.title,
                "at": datetime.now(UTC),
                "doc": json.dumps(old.model_dump(mode="json")),
            },
        )

    await run(target, insert_old)
    async with target.store() as store:
        row = await store.get_incident(old.id)
        assert row is not None and row.title == old.title and row.playbook is None
        assert row.status == "new"
        await store.set_incident_playbook(old.id, "ransomware")
    assert await run(target, current_revisions) == {HEAD}
    assert await run(target, differences) == []


async def test_a_create_all_store_that_predates_some_tables_gains_them(
    target: Target,
) -> None:
    """Given a store made by create_all before the ledger, intake and vote tables existed,
    When opened, Then the missing baseline tables are created, and the store ends at head
    matching the models."""
    await run(target, legacy_schema(STORE_TABLES - {"approval_votes"}))
    async with target.store() as store:
        assert await store.add_vote("APR-1", "U1", "approve")
    present = await run(target, tables)
    assert present >= STORE_TABLES | INTAKE_AND_LEDGER_TABLES
    assert await run(target, differences) == []


async def test_a_store_from_a_newer_stanch_is_refused_by_name(target: Target) -> None:
    """Given a store stamped at a revision this stanch does not have,
    When opened, Then SchemaError names the revision stanch wants and the unknown one."""
    async with target.store():
        pass
    await run(target, lambda c: c.execute(update(VERSIONS).values(version_num="0099_x")))
    with pytest.raises(SchemaError, match=rf"{HEAD}.*0099_x"):
        async with target.store():
            pass


# Concurrency ------------------------------------------------------------------------------
async def test_concurrent_openers_of_a_fresh_store_all_succeed(target: Target) -> None:
    """Given a fresh store opened by five engines at the same moment,
    When they all migrate it, Then none fails, the schema is built once and is at head."""

    async def open_once() -> None:
        async with target.store() as store:
            await store.record_stage("INC-1", Stage.DETECT, "started")

    async with asyncio.timeout(60):
        outcomes = await asyncio.gather(*(open_once() for _ in range(5)), return_exceptions=True)
    assert [o for o in outcomes if o is not None] == []
    assert await run(target, current_revisions) == {HEAD}
    assert await run(target, differences) == []

    def versions(connection: Connection) -> int:
        return len(connection.execute(select(VERSIONS.c.version_num)).all())

    assert await run(target, versions) == 1


async def test_fresh_sqlite_stores_opened_together_are_all_in_wal(tmp_path: Path) -> None:
    """Given twenty fresh SQLite stores, each opened by five engines at the same moment
    (switching a file to WAL takes its exclusive lock, which SQLite refuses at once, not
    after the busy timeout, while another opener holds a lock),
    When they all open and write, Then none fails and every file is in WAL mode."""

    async def open_once(url: str) -> None:
        async with open_store(url) as store:
            await store.record_stage("INC-1", Stage.DETECT, "started")

    paths = [tmp_path / f"store-{n}.db" for n in range(20)]
    async with asyncio.timeout(120):
        for path in paths:
            url = f"sqlite+aiosqlite:///{path}"
            outcomes = await asyncio.gather(
                *(open_once(url) for _ in range(5)), return_exceptions=True
            )
            assert [o for o in outcomes if o is not None] == [], path.name
    for path in paths:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


OPEN_IN_A_PROCESS = """
import asyncio, json, sys
from flows.record import open_store

async def main():
    async with open_store(sys.argv[1], connect_args=json.loads(sys.argv[2])) as store:
        await store.record_stage("INC-1", "detect", "started")

asyncio.run(main())
"""


async def test_two_processes_open_a_fresh_store_at_once(target: Target) -> None:
    """Given two stanch processes started together on the same fresh store (the CLI and a
    flow run, say), When both open it, Then both exit 0 and the store is at head."""
    argv = [sys.executable, "-c", OPEN_IN_A_PROCESS, target.url, json.dumps(target.connect_args)]
    processes = [
        await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outcomes = [await asyncio.wait_for(p.communicate(), timeout=60) for p in processes]
    for process, (_, stderr) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, stderr.decode()[-2000:]
    assert await run(target, current_revisions) == {HEAD}


async def test_opening_a_current_store_takes_no_write_lock(tmp_path: Path) -> None:
    """Given a SQLite store at head and another process holding its write lock,
    When the store is opened, Then it opens at once (the revision check only reads)
    instead of waiting for the writer."""
    path = tmp_path / "stanch.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with open_store(url):
        pass
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        async with asyncio.timeout(5), open_store(url) as store:
            assert await store.get_incident("INC-none") is None
        writer.execute("ROLLBACK")


async def test_a_failed_migration_leaves_nothing_half_done(target: Target) -> None:
    """Given a fresh store holding a foreign table that owns an index name the baseline
    needs (ix_stage_events_incident_id), so the migration fails halfway,
    When opened, Then SchemaError says why, and the tables the migration had created
    before the failure are rolled back with it."""

    def blocker(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE blocker (x INTEGER)"))
        connection.execute(text("CREATE INDEX ix_stage_events_incident_id ON blocker (x)"))

    await run(target, blocker)
    with pytest.raises(SchemaError, match="ix_stage_events_incident_id"):
        async with target.store():
            pass
    assert await run(target, tables) == {"blocker"}


async def test_set_incident_playbook_refuses_unknown_incidents_and_long_ids(
    tmp_path: Path,
) -> None:
    """Given a store with one incident,
    When its playbook is set, cleared, set on an unknown incident or set to an id longer
    than the column, Then the first two are stored and the others refused by name."""
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as store:
        await store.save_incident(incident(1))
        await store.set_incident_playbook(incident(1).id, "phishing")
        async with store.engine.connect() as conn:
            stored = await conn.scalar(select(IncidentRow.playbook))
        assert stored == "phishing"
        await store.set_incident_playbook(incident(1).id, None)
        row = await store.get_incident(incident(1).id)
        assert row is not None and row.playbook is None
        with pytest.raises(LookupError, match="INC-none"):
            await store.set_incident_playbook("INC-none", "phishing")
        with pytest.raises(ValueError, match="81 characters"):
            await store.set_incident_playbook(incident(1).id, "p" * 81)


# The alembic command, for writing revisions -----------------------------------------------
def test_the_alembic_command_sees_no_change_and_ignores_foreign_tables(tmp_path: Path) -> None:
    """Given a SQLite store upgraded by `alembic upgrade head` from the checkout (pyproject's
    [tool.alembic], -x url=…), sharing its file with a table stanch does not declare (as
    it shares PostgreSQL with the Prefect server),
    When `alembic check` runs, Then it finds the models and the revisions in agreement and
    proposes no drop of the foreign table; after the playbook column is dropped by hand,
    check reports the difference."""
    path = tmp_path / "stanch.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE flow_run (id INTEGER PRIMARY KEY)")
    root = Path(__file__).parents[2]

    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url=sqlite+aiosqlite:///{path}", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    upgraded = alembic("upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    check = alembic("check")
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE incidents DROP COLUMN playbook")
    lagging = alembic("check")
    assert lagging.returncode != 0
    assert "playbook" in lagging.stdout + lagging.stderr
