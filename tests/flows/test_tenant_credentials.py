"""Live mode acts for a tenant only with that tenant's own vendor credentials.

The provider's credentials point at a loopback HTTP server that records every request it
gets: a run for a tenant without credentials of its own must send it nothing at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows.lifecycle import handle_incident
from flows.record import open_store
from flows.settings import load_settings
from stanch.lab import lab_environment
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str]

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        # 401: a permanent fault, so a run that does call out fails fast instead of retrying.
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records each request line; yields (origin, lines)."""
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _provider_credentials(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    monkeypatch.setenv("STANCH_MODE", "live")
    for vendor in ("crowdstrike", "okta", "fortigate"):
        for name, value in lab_environment(vendor, origin).items():
            monkeypatch.setenv(name, value)


async def test_a_live_run_for_a_tenant_without_credentials_calls_no_vendor(
    monkeypatch: pytest.MonkeyPatch, recorder: tuple[str, list[str]]
) -> None:
    """Given live mode, the provider's credentials for every vendor, and tenant globex
    with none of its own,
    When handle-incident runs a globex incident,
    Then the run fails naming globex and the missing setting, and not one request
    reached any vendor."""
    origin, seen = recorder
    _provider_credentials(monkeypatch, origin)
    incident = factories.incident(9101, tenant="globex")
    async with open_store(load_settings().store_url) as store:
        await store.save_incident(incident)
    state = await handle_incident(incident, return_state=True)
    assert state.is_failed()
    error = await state.aresult(raise_on_failure=False)
    assert "tenant globex has no crowdstrike credentials" in str(error)
    assert "STANCH_GLOBEX_CROWDSTRIKE_CLIENT_ID" in str(error)
    assert seen == []


async def test_a_tenant_configured_for_the_providers_credentials_reaches_the_vendor(
    monkeypatch: pytest.MonkeyPatch, recorder: tuple[str, list[str]]
) -> None:
    """Given the same setup, but globex's entry saying "credentials": "provider",
    When handle-incident runs, Then the vendors are called with the provider's settings
    (the recorder sees them): the refusal above is the tenant check, not a broken setup."""
    origin, seen = recorder
    _provider_credentials(monkeypatch, origin)
    monkeypatch.setenv("STANCH_TENANTS", '{"globex": {"credentials": "provider"}}')
    incident = factories.incident(9102, tenant="globex")
    async with open_store(load_settings().store_url) as store:
        await store.save_incident(incident)
    state = await handle_incident(incident, return_state=True)
    assert state.is_failed()  # the recorder answers 401 to everything
    assert seen, "the provider's vendor endpoints were never called"
