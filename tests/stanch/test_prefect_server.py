"""The embedded Prefect server stanch starts: its UI talks to it, and it runs patched."""

from __future__ import annotations

import os

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_the_ui_of_the_embedded_server_talks_to_that_server() -> None:
    """Given the embedded server started on a port other than Prefect's 4200 (the test
    run's own random port),
    When the Prefect UI asks where its API is,
    Then it is told that server's own API, not 4200 (another install's, or nobody's)."""
    api_url = os.environ["PREFECT_API_URL"]
    settings = httpx.get(f"{api_url.removesuffix('/api')}/ui-settings", timeout=10).json()
    assert settings["api_url"] == api_url
    assert not api_url.endswith(":4200/api")


def test_the_embedded_server_begins_sqlite_writes_immediate() -> None:
    """Given the embedded server stanch started for this test run,
    When its log is read, Then it says its SQLite transactions begin IMMEDIATE."""
    from tests.conftest import STANCH_HOME

    log = (STANCH_HOME / "prefect" / "server.log").read_text(errors="replace")
    assert "SQLite transactions begin IMMEDIATE (Prefect 3.9.1)" in log
