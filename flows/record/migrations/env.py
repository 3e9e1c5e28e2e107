"""Alembic environment of the incident store.

Migrates the connection ``open_store`` passes in ``config.attributes["connection"]``
(inside the caller's transaction). Run by the ``alembic`` command instead, it opens the
store at ``-x url=<sqlalchemy url>`` or, by default, the one stanch's settings name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from flows.record.migrations import VERSION_TABLE
from flows.record.tables import Base

config = context.config
target_metadata = Base.metadata


def _ours(name: str | None, type_: str, _parents: Any) -> bool:
    # The database may be shared (the Prefect server's tables beside the store's):
    # autogenerate must not propose dropping tables stanch does not declare.
    return type_ != "table" or name in target_metadata.tables


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from flows.settings import load_settings

    return load_settings().store_url


async def _run_on_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


given = config.attributes.get("connection")
if given is not None:
    _run(given)
elif context.is_offline_mode():
    # `alembic upgrade head --sql -x url=postgresql://…`: the DDL as a script to review.
    context.configure(
        url=_url(), target_metadata=target_metadata, version_table=VERSION_TABLE, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_on_url(_url()))
