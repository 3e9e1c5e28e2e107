"""Connection behaviour against the simulator: tokens, throttling, faults and timeouts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from integrations.entra import EntraIdentity, EntraRiskDetections, EntraSettings, connect
from integrations.entra.sim import EntraSimulator
from integrations.errors import (
    AuthError,
    RateLimited,
    TransientError,
    VendorTimeout,
    VendorUnavailable,
)
from tests.integrations.entra.support import lab

TOKEN_ROUTE = "/{tenant}/oauth2/v2.0/token"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_ENTRA_* variables, When settings load, Then they fill the fields."""
    monkeypatch.setenv("STANCH_ENTRA_TENANT_ID", "t")
    monkeypatch.setenv("STANCH_ENTRA_CLIENT_ID", "c")
    monkeypatch.setenv("STANCH_ENTRA_CLIENT_SECRET", "s")

    settings = EntraSettings()

    assert (settings.tenant_id, settings.client_id) == ("t", "c")
    assert isinstance(settings.client_secret, SecretStr)
    assert settings.client_secret.get_secret_value() == "s"
    assert settings.base_url == "https://graph.microsoft.com/v1.0"
    assert settings.login_url == "https://login.microsoftonline.com"
    assert settings.timeout_seconds == 10


def test_settings_require_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given no client secret anywhere, When settings load, Then validation fails."""
    monkeypatch.delenv("STANCH_ENTRA_CLIENT_SECRET", raising=False)
    with pytest.raises(ValueError, match="client_secret"):
        EntraSettings(tenant_id="t", client_id="c")


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"client_secret": SecretStr("wrong")}, "invalid_client"),
        ({"client_id": "not-the-app"}, "unauthorized_client"),
        ({"tenant_id": "not-our-tenant"}, "invalid_request"),
    ],
)
async def test_bad_credentials_raise_auth_error(override: dict[str, object], code: str) -> None:
    """Given wrong app credentials, When a Graph call needs a token, Then AuthError (permanent)
    carries the identity platform's error code, and Graph itself is never called."""
    sim = EntraSimulator()
    user_id = sim.add_user("a@contoso.com")
    async with connect(lab(**override), transport=sim.transport()) as client:
        with pytest.raises(AuthError) as caught:
            await EntraIdentity(client).get_user(user_id)

    assert caught.value.vendor_code == code
    assert "AADSTS" in str(caught.value)
    assert [r.route for r in sim.requests] == [TOKEN_ROUTE]


async def test_token_request_form(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given lab settings, When the first call runs, Then a token from the lab tenant is used."""
    sim.add_user("a@contoso.com")

    await identity.find_user("a@contoso.com")

    assert sim.requests[0].path == f"/{EntraSimulator.TENANT_ID}/oauth2/v2.0/token"
    assert sim.requests[0].status == 200
    assert len(sim.tokens) == 1


async def test_revoked_token_is_refetched(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given a cached token the tenant stops honouring, When called, Then one refetch, then 200."""
    user_id = sim.add_user("a@contoso.com")
    await identity.get_user(user_id)
    sim.expire_tokens()

    user = await identity.get_user(user_id)

    assert user.id == user_id
    statuses = [(r.route, r.status) for r in sim.requests]
    assert statuses[-3:] == [
        ("/v1.0/users/{id}", 401),
        (TOKEN_ROUTE, 200),
        ("/v1.0/users/{id}", 200),
    ]


async def test_graph_rejects_bad_bearer(sim: EntraSimulator) -> None:
    """Given a made-up bearer token, When Graph is called, Then 401 in the Graph envelope."""
    async with sim.client(headers={"Authorization": "Bearer forged"}) as raw:
        response = await raw.get("/users")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert set(response.json()["error"]["innerError"]) >= {"request-id", "date"}


async def test_429_with_retry_after() -> None:
    """Given Graph's per-app budget exhausted, When called, Then RateLimited with the header's
    seconds."""
    sim = EntraSimulator(rate_limit_per_minute=2, clock=lambda: 1000.0)
    user_id = sim.add_user("a@contoso.com")
    async with connect(lab(), transport=sim.transport()) as client:
        identity = EntraIdentity(client)
        await identity.get_user(user_id)
        await identity.get_user(user_id)
        with pytest.raises(RateLimited) as caught:
            await identity.get_user(user_id)

    assert caught.value.retry_after == 60.0
    assert caught.value.vendor_code == "TooManyRequests"
    assert isinstance(caught.value, TransientError)


async def test_identity_protection_429_without_retry_after() -> None:
    """Given Identity Protection's 1 request/s limit, When a second call lands in the same
    second, Then RateLimited with retry_after None (the flow's own backoff applies)."""
    sim = EntraSimulator(identity_protection_rps_limit=1, clock=lambda: 1000.0)
    user_id = sim.add_user("a@contoso.com")
    async with connect(lab(), transport=sim.transport()) as client:
        await EntraIdentity(client).confirm_compromised(user_id)
        with pytest.raises(RateLimited) as caught:
            await EntraRiskDetections(client).fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC))
        # Users are not under the Identity Protection limit.
        await EntraIdentity(client).get_user(user_id)

    assert caught.value.retry_after is None
    assert caught.value.status_code == 429


async def test_identity_protection_limit_resets_after_a_second() -> None:
    """Given the 1 request/s limit, When the next call comes a second later, Then it succeeds."""
    now = [1000.0]
    sim = EntraSimulator(identity_protection_rps_limit=1, clock=lambda: now[0])
    async with connect(lab(), transport=sim.transport()) as client:
        source = EntraRiskDetections(client)
        await source.fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC))
        now[0] += 1.0
        assert await source.fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC)) == []


async def test_5xx_is_vendor_unavailable(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given Graph answering 503 with its envelope, When called, Then VendorUnavailable with the
    vendor's message and code."""
    user_id = sim.add_user("a@contoso.com")
    body = {"error": {"code": "serviceNotAvailable", "message": "Service unavailable"}}
    sim.fail_next(status=503, body=json.dumps(body).encode(), path_prefix="/v1.0/")

    with pytest.raises(VendorUnavailable) as caught:
        await identity.suspend_user(user_id, reason="x")

    assert caught.value.vendor_code == "serviceNotAvailable"
    assert "Service unavailable" in str(caught.value)
    assert sim.users[user_id].account_enabled is True


async def test_5xx_with_html_body(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given a gateway's HTML 502, When called, Then VendorUnavailable without a vendor code."""
    sim.fail_next(status=502, body=b"<html>Bad Gateway</html>", path_prefix="/v1.0/")

    with pytest.raises(VendorUnavailable) as caught:
        await identity.find_user("a@contoso.com")

    assert caught.value.vendor_code is None


async def test_hang_with_short_timeout_is_vendor_timeout() -> None:
    """Given Graph hanging longer than the client timeout, When called, Then VendorTimeout."""
    sim = EntraSimulator()
    user_id = sim.add_user("a@contoso.com")
    sim.hang_next(seconds=5, path_prefix="/v1.0/")
    async with connect(lab(timeout_seconds=0.2), transport=sim.transport()) as client:
        with pytest.raises(VendorTimeout):
            await EntraIdentity(client).get_user(user_id)


async def test_token_endpoint_down_is_transient() -> None:
    """Given the identity platform answering 503, When a call needs a token, Then
    VendorUnavailable (retryable), not AuthError."""
    sim = EntraSimulator()
    sim.fail_next(status=503, path_prefix=f"/{EntraSimulator.TENANT_ID}/")
    async with connect(lab(), transport=sim.transport()) as client:
        with pytest.raises(VendorUnavailable):
            await EntraIdentity(client).find_user("a@contoso.com")
