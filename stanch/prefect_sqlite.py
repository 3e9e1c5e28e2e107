"""The embedded Prefect server, with its SQLite write transactions begun ``IMMEDIATE``.

Prefect 3.9.1 begins a server transaction on SQLite as ``BEGIN DEFERRED`` unless the
caller asks for a row lock. A deferred transaction that reads and then writes (creating a
flow run reads the flow's labels first) cannot upgrade its read snapshot once another
connection has committed: SQLite fails it at once with ``SQLITE_BUSY`` instead of waiting
out ``busy_timeout``, the server answers 503, and the client sleeps about two seconds
before trying again (PrefectHQ/prefect#18934, #19771). ``BEGIN IMMEDIATE`` takes the
write lock first and waits for it instead.

This applies only to the server stanch itself starts (``python -m stanch.prefect_sqlite
server start``, from :func:`stanch.prefect_server.start_server`), only on SQLite, and only
when the installed Prefect is the version, and ``begin_transaction`` the very code, it was
written against; otherwise the server starts unpatched and says why in its log. See
``bench/README.md`` for what it changes and measures.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

WRITTEN_FOR = "3.9.1"
"""The Prefect version whose ``AioSqliteConfiguration.begin_transaction`` this replaces."""
SOURCE_SHA256 = "c9ea33bf1b494ec8d39c907dfbb2927ba29668ad639677bf441fff25fe2649bc"
"""SHA-256 of that method's source in Prefect ``WRITTEN_FOR``: any change upstream
(a fix, a refactor) leaves the server unpatched until this module is looked at again."""

log = logging.getLogger("stanch.prefect_sqlite")


def _source_sha256() -> str:
    from prefect.server.database.configurations import AioSqliteConfiguration

    source = inspect.getsource(AioSqliteConfiguration.begin_transaction)
    return hashlib.sha256(source.encode()).hexdigest()


def why_not_patched() -> str | None:
    """Why the patch would not apply to this Prefect, or ``None`` when it does."""
    import prefect

    if prefect.__version__ != WRITTEN_FOR:
        return f"Prefect {prefect.__version__} is not {WRITTEN_FOR}, which the patch is for"
    if _source_sha256() != SOURCE_SHA256:
        return "AioSqliteConfiguration.begin_transaction is not the code the patch replaces"
    return None


def apply() -> bool:
    """Make every SQLite server transaction ``BEGIN IMMEDIATE``; ``True`` if applied."""
    reason = why_not_patched()
    if reason is not None:
        log.warning("SQLite transactions left as Prefect begins them: %s", reason)
        return False
    from prefect.server.database import configurations

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        # As Prefect's, but IMMEDIATE whether or not a row lock was asked for: the
        # transaction waits for the write lock instead of failing when it upgrades.
        token = configurations.SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            configurations.SQLITE_BEGIN_MODE.reset(token)

    configurations.AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]
    return True


def main() -> None:
    """``prefect`` with the patch applied: ``python -m stanch.prefect_sqlite server start``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if apply():
        log.info("SQLite transactions begin IMMEDIATE (Prefect %s)", WRITTEN_FOR)
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()


if __name__ == "__main__":
    main()
