"""Test-run wiring: one real Prefect server for the whole run, all state in a temp dir.

Prefect reads its settings once, when it is first imported, so the API URL and home are
fixed here at import time, before any test module imports Prefect; the server itself is
started only when a test asks for the ``prefect_server`` fixture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN_DIR = Path(tempfile.mkdtemp(prefix="stanch-tests-"))
STANCH_HOME = RUN_DIR / "stanch"
(STANCH_HOME / "prefect").mkdir(parents=True)


def _pick_port() -> int:
    # Anywhere in a wide range: two test runs on one machine (developers, agents) must not
    # both settle on the first free port above a fixed one and share a server.
    import random

    from stanch.prefect_server import _free_port

    return _free_port(random.randint(20_000, 40_000))


PORT = _pick_port()
os.environ.update(
    {
        "PREFECT_HOME": str(STANCH_HOME / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "STANCH_HOME": str(STANCH_HOME),
        "STANCH_REPORTS_DIR": str(RUN_DIR / "reports"),
        "STANCH_APPROVAL_TIMEOUT_SECONDS": "60",
    }
)
for name in ("STANCH_MODE", "STANCH_EDR", "STANCH_IDENTITY", "STANCH_FIREWALL", "STANCH_TENANT"):
    os.environ.pop(name, None)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real ``prefect server start`` on SQLite, shared by every test of the run."""
    import asyncio

    from stanch.prefect_server import drain_prefect_clients, start_server

    server = start_server(STANCH_HOME, port=PORT)
    assert server.api_url == os.environ["PREFECT_API_URL"], "port was taken meanwhile"
    yield server.api_url
    # Ship the logs and events Prefect still holds, or it retries them after the stop.
    asyncio.run(drain_prefect_clients())
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _remove_run_dir() -> Iterator[None]:
    yield
    shutil.rmtree(RUN_DIR, ignore_errors=True)
