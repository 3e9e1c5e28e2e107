"""The incident store's schema, as Alembic revisions that ``open_store`` applies.

No ``alembic.ini`` is needed: :func:`alembic_config` builds the configuration in code and
:func:`upgrade` runs ``alembic upgrade head`` on the store's own engine. To write a new
revision, change the models, then from a checkout run
``alembic revision --autogenerate --rev-id 0003_<what> -m "<what>"`` (``[tool.alembic]``
in pyproject.toml points at this package) and edit the result into plain DDL.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import SQLAlchemyError

from flows.errors import StanchError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

VERSION_TABLE = "stanch_alembic_version"
"""Where the store's revision is kept. Not ``alembic_version``: the Prefect server may
share the database (one PostgreSQL for both) and keeps its own revision there."""

BASELINE = "0001_baseline"
"""The revision whose tables ``create_all`` made before the store had migrations."""

# pg_advisory_xact_lock key (any constant 64-bit number) serialising migrations between
# processes that open the same PostgreSQL store at once.
_PG_LOCK_KEY = 0x5374616E6368  # "Stanch"


class SchemaError(StanchError):
    """The store's schema cannot be brought to the revision this stanch knows."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for this package, optionally bound to ``connection``.

    ``env.py`` migrates the connection in ``config.attributes["connection"]`` when there
    is one, inside whatever transaction the caller holds.
    """
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolation: a "%" in the install path must be doubled.
    config.set_main_option("script_location", str(Path(__file__).parent).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest revision(s) in ``versions/`` (read once per process)."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    """The revision(s) the store on ``connection`` is at; empty when it has none."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return frozenset(context.get_current_heads())


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the store at ``engine`` to the newest revision.

    Safe when several processes open the same store at once (the CLI, ``stanch serve``
    and flow runs do): the migration runs under a database-wide lock and the waiting
    processes then find the store already current. A store made by ``create_all`` before
    migrations existed is adopted: its missing tables are created, it is stamped at
    :data:`BASELINE`, then upgraded.

    Raises:
        SchemaError: the store is at a revision this stanch does not know (a newer
            stanch migrated it), or a migration failed.
    """
    async with engine.connect() as conn:
        # The common case, checked without taking any lock.
        if await conn.run_sync(current_revisions) == head_revisions():
            return
    async with engine.connect() as conn:
        await _lock(conn)
        await conn.run_sync(_upgrade)
        await conn.commit()


async def _lock(conn: AsyncConnection) -> None:
    # Taken inside the transaction the whole migration runs in, and released by its
    # commit; a second opener waits here, then sees the finished schema.
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif dialect == "sqlite":
        # The write lock up front (waiting out busy_timeout), so that DDL and the version
        # row commit together or not at all; SQLite's DDL is transactional.
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.util import CommandError

    config = alembic_config(connection)
    try:
        present = set(inspect(connection).get_table_names())
        baseline = _baseline_module(config)
        if VERSION_TABLE not in present and present & set(baseline.TABLES):
            _adopt(connection, config, baseline, present)
        command.upgrade(config, "head")
    except CommandError as exc:
        # Alembic's own refusal, in practice: the store's revision is not in versions/.
        raise SchemaError(
            f"cannot migrate the store to revision {_heads()}: {exc} "
            "(was it migrated by a newer stanch?)"
        ) from exc
    except SQLAlchemyError as exc:
        raise SchemaError(
            f"migrating the store to revision {_heads()} failed, nothing was changed: {exc}"
        ) from exc


def _heads() -> str:
    return ", ".join(sorted(head_revisions()))


def _baseline_module(config: Config) -> Any:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config).get_revision(BASELINE)
    assert script is not None  # shipped with the package
    return script.module


def _adopt(connection: Connection, config: Config, baseline: Any, present: set[str]) -> None:
    """Make a ``create_all`` store look migrated to :data:`BASELINE`."""
    from alembic import command
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    # create_all made whichever tables the stanch of the day declared: create the
    # baseline tables that store predates, exactly as the baseline revision does.
    missing = [name for name in baseline.TABLES if name not in present]
    if missing:
        with Operations.context(MigrationContext.configure(connection)):
            for name in missing:
                baseline.TABLES[name]()
    command.stamp(config, BASELINE)


__all__ = [
    "BASELINE",
    "VERSION_TABLE",
    "SchemaError",
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "upgrade",
]
