"""OAuth2 token handling and the mapping of simulator failures onto the error tree."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import ValidationError

from integrations.crowdstrike import CrowdStrikeEDR, CrowdStrikeSettings, connect, lab_settings
from integrations.crowdstrike.sim import CrowdStrikeSimulator
from integrations.errors import (
    AuthError,
    NotFoundError,
    RateLimited,
    VendorTimeout,
    VendorUnavailable,
)

from .conftest import FakeClock, operation, settings


def token_calls(sim: CrowdStrikeSimulator) -> list[int]:
    return [r.status for r in sim.requests if r.path == "/oauth2/token"]


async def test_token_endpoint_matches_documented_shape(sim: CrowdStrikeSimulator) -> None:
    """Given lab credentials, when the token is requested as a form, then the answer has the
    documented status, keys, lifetime and region header."""
    documented = operation("auth", "POST", "/oauth2/token")
    async with sim.client() as raw:
        response = await raw.post(
            "/oauth2/token",
            data={"client_id": sim.LAB_CLIENT_ID, "client_secret": sim.LAB_CLIENT_SECRET},
        )
    assert response.status_code in documented["success"]
    body = response.json()
    assert set(body) == set(documented["example_response"])
    assert body["expires_in"] == documented["example_response"]["expires_in"] == 1799
    assert body["token_type"] == "bearer"
    assert response.headers["X-Cs-Region"] == "us-1"


async def test_calls_without_bearer_get_401_envelope(sim: CrowdStrikeSimulator) -> None:
    """Given no Authorization header, when a host route is called, then the answer is 401 in
    the errors[] envelope."""
    async with sim.client() as raw:
        response = await raw.get("/devices/queries/devices/v1")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"meta", "resources", "errors"}
    assert body["errors"][0]["code"] == 401
    assert "trace_id" in body["meta"]


async def test_token_fetched_once_for_concurrent_calls(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given a fresh client, when ten calls start at once, then one token serves them all."""
    aid = sim.add_host("WS-0042")
    hosts = await asyncio.gather(*(edr.get_host(aid) for _ in range(10)))
    assert {h.id for h in hosts} == {aid}
    assert token_calls(sim) == [201]
    assert sim.tokens_issued == 1


async def test_token_refreshed_shortly_before_expiry(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR, client_clock: FakeClock
) -> None:
    """Given a token with 1799 s lifetime, when time passes, then it is reused mid-life and
    renewed within the last minute before expiry."""
    aid = sim.add_host("WS-0042")
    await edr.get_host(aid)
    client_clock.advance(1000)
    await edr.get_host(aid)
    assert token_calls(sim) == [201]
    client_clock.advance(745)  # 1745 s in: less than 60 s left
    await edr.get_host(aid)
    assert token_calls(sim) == [201, 201]


async def test_revoked_token_is_replaced_once(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR, sim_clock: FakeClock
) -> None:
    """Given the vendor expired the token before the client expected, when a call gets 401,
    then a new token is fetched and the call succeeds."""
    aid = sim.add_host("WS-0042")
    await edr.get_host(aid)
    sim_clock.advance(1800)
    host = await edr.get_host(aid)
    assert host.id == aid
    device_statuses = [r.status for r in sim.requests if r.path.startswith("/devices/")]
    assert device_statuses == [200, 401, 200]
    assert token_calls(sim) == [201, 201]


async def test_bad_credentials_raise_auth_error_without_secret(
    sim: CrowdStrikeSimulator,
) -> None:
    """Given a wrong secret, when any call is made, then AuthError (401) is raised and its
    text does not contain the secret."""
    wrong = settings(client_secret="not-the-secret-xyz")
    async with connect(wrong, sim.transport()) as http:
        with pytest.raises(AuthError) as caught:
            await CrowdStrikeEDR(http).get_host("0" * 32)
    assert caught.value.status_code == 401
    assert "not-the-secret-xyz" not in str(caught.value)
    assert "not-the-secret-xyz" not in repr(wrong)
    assert token_calls(sim) == [401]


async def test_rate_limit_gives_retry_after_from_epoch_header(sim_clock: FakeClock) -> None:
    """Given a limit of two requests a minute, when a third is sent, then RateLimited carries
    the wait until the epoch in X-Ratelimit-Retryafter."""
    sim = CrowdStrikeSimulator(rate_limit_per_minute=2, clock=sim_clock)
    aid = sim.add_host("WS-0042")
    async with connect(lab_settings(), sim.transport()) as http:
        edr = CrowdStrikeEDR(http)
        await edr.get_host(aid)  # token + lookup use up the window
        sim_clock.advance(15)
        with pytest.raises(RateLimited) as caught:
            await edr.get_host(aid)
    assert caught.value.status_code == 429
    assert caught.value.retry_after is not None
    assert 44 <= caught.value.retry_after <= 46
    assert sim.requests[-1].status == 429


async def test_rate_limit_header_is_epoch(sim_clock: FakeClock) -> None:
    """Given an exhausted window, when the simulator answers 429, then the retry header is
    a Unix time in the next minute, not a delay."""
    sim = CrowdStrikeSimulator(rate_limit_per_minute=1, clock=sim_clock)
    async with sim.client() as raw:
        await raw.get("/devices/queries/devices/v1")
        response = await raw.get("/devices/queries/devices/v1")
    assert response.status_code == 429
    retry_at = float(response.headers["X-Ratelimit-Retryafter"])
    assert time.time() < retry_at <= time.time() + 61
    assert response.headers["X-Ratelimit-Remaining"] == "0"
    assert response.json()["errors"][0]["code"] == 429


async def test_injected_5xx_is_vendor_unavailable(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given the vendor fails with 503, when a host is looked up, then VendorUnavailable."""
    sim.fail_next(status=503, path_prefix="/devices/")
    with pytest.raises(VendorUnavailable) as caught:
        await edr.find_host("WS-0042")
    assert caught.value.status_code == 503


async def test_injected_hang_is_vendor_timeout(sim: CrowdStrikeSimulator) -> None:
    """Given a short client timeout, when the vendor hangs, then VendorTimeout."""
    sim.hang_next(seconds=5, path_prefix="/devices/")
    async with connect(settings(timeout_seconds=0.2), sim.transport()) as http:
        with pytest.raises(VendorTimeout):
            await CrowdStrikeEDR(http).get_host("0" * 32)


async def test_http_404_is_not_found(sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR) -> None:
    """Given an HTTP 404 with the errors[] envelope, when a host is fetched, then
    NotFoundError carries the vendor's message."""
    body = b'{"meta": {}, "resources": [], "errors": [{"code": 404, "message": "gone"}]}'
    sim.fail_next(status=404, body=body, path_prefix="/devices/entities/")
    with pytest.raises(NotFoundError) as caught:
        await edr.get_host("0" * 32)
    assert "gone" in str(caught.value)
    assert caught.value.vendor_code == "404"


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_CROWDSTRIKE_* variables, when settings load, then they are used and the
    secret stays hidden; without the secret, loading fails."""
    monkeypatch.setenv("STANCH_CROWDSTRIKE_CLIENT_ID", "id-1")
    monkeypatch.setenv("STANCH_CROWDSTRIKE_CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("STANCH_CROWDSTRIKE_BASE_URL", "https://api.eu-1.crowdstrike.com")
    loaded = CrowdStrikeSettings()  # type: ignore[call-arg,unused-ignore]
    assert loaded.client_id == "id-1"
    assert loaded.client_secret.get_secret_value() == "s3cr3t-value"
    assert loaded.base_url == "https://api.eu-1.crowdstrike.com"
    assert loaded.timeout_seconds == 10
    assert "s3cr3t-value" not in repr(loaded)
    monkeypatch.delenv("STANCH_CROWDSTRIKE_CLIENT_SECRET")
    with pytest.raises(ValidationError):
        CrowdStrikeSettings()  # type: ignore[call-arg,unused-ignore]


async def test_connect_sets_base_url_and_timeouts() -> None:
    """Given settings, when connected, then the client has their base URL and timeout."""
    async with connect(settings(timeout_seconds=3.5)) as http:
        assert str(http.base_url).rstrip("/") == "https://api.crowdstrike.com"
        assert http.timeout == httpx.Timeout(3.5)
