"""PostgreSQL for the store's tests: a fresh schema per test, skipped when none is reachable.

Each test gets its own schema, made the connection's ``search_path``, so the store's
tables and its Alembic version table land there and are dropped with it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flows.record import Store, open_store

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
"""Parameters of a fixture that runs its tests on SQLite, and on PostgreSQL when reachable."""

_problem: list[str | None] = []


async def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or ``None``; probed once, with a 1 s timeout."""
    if not _problem:
        engine = create_async_engine(PG_URL, connect_args={"timeout": 1})
        try:
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
            _problem.append(None)
        except Exception as exc:  # any failure to connect means: skip, and say why
            _problem.append(f"PostgreSQL is not reachable at {PG_URL}: {exc!r}"[:300])
        finally:
            await engine.dispose()
    return _problem[0]


@contextlib.asynccontextmanager
async def pg_schema(prefix: str = "stanch_test") -> AsyncIterator[dict[str, Any]]:
    """A fresh, empty schema, dropped on exit; yields the driver arguments that use it.

    Skips the test when PostgreSQL is not reachable.
    """
    problem = await pg_unreachable()
    if problem is not None:
        pytest.skip(problem)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL, connect_args={"timeout": 1})
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield {"timeout": 5, "server_settings": {"search_path": schema}}
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@contextlib.asynccontextmanager
async def pg_engine(prefix: str = "stanch_test") -> AsyncIterator[AsyncEngine]:
    """An engine whose search_path is a fresh, empty schema."""
    async with pg_schema(prefix) as connect_args:
        engine = create_async_engine(PG_URL, connect_args=connect_args)
        try:
            yield engine
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def backend_store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store opened by ``open_store`` (migrated): a SQLite file or a PG schema."""
    if backend == "sqlite":
        async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as store:
            yield store
        return
    async with pg_schema() as connect_args, open_store(PG_URL, connect_args=connect_args) as store:
        yield store
