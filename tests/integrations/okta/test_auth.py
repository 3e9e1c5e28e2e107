"""Okta settings and the two auth modes: SSWS token and private_key_jwt client credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr, ValidationError

from integrations.errors import AuthError
from integrations.okta import OktaIdentity, OktaSettings, OktaSimulator, connect
from integrations.okta.client import client_assertion, load_private_key
from tests.integrations.okta.conftest import RecordingTransport, jwt_settings, ssws_settings


def _decode(part: str) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _other_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({"auth_mode": "ssws"}, "api_token"),
        ({"auth_mode": "ssws", "api_token": ""}, "api_token"),
        ({"auth_mode": "private_key_jwt", "private_key_pem": "x"}, "client_id"),
        ({"auth_mode": "private_key_jwt", "client_id": "0oa1"}, "private_key_pem"),
    ],
)
def test_settings_validator_names_the_missing_field(values: dict[str, str], missing: str) -> None:
    """Given settings lacking the credential their auth mode needs,
    When they are validated,
    Then the error names the missing field and its environment variable."""
    with pytest.raises(ValidationError) as caught:
        OktaSettings(base_url="https://acme.okta.com", **values)  # type: ignore[arg-type]
    assert missing in str(caught.value)
    assert f"STANCH_OKTA_{missing.upper()}" in str(caught.value)


def test_settings_reject_a_bad_key_without_echoing_it() -> None:
    """Given private_key_jwt settings whose key is not a PEM RSA key,
    When they are validated,
    Then the error says so and does not repeat the secret."""
    secret = "not-a-key-but-secret-material-123"
    with pytest.raises(ValidationError) as caught:
        OktaSettings(
            base_url="https://acme.okta.com",
            auth_mode="private_key_jwt",
            client_id="0oa1",
            private_key_pem=secret,
        )
    assert "private_key_pem" in str(caught.value)
    assert secret not in str(caught.value)


def test_settings_reject_the_admin_console_url() -> None:
    """Given the -admin console host instead of the org URL,
    When settings are validated,
    Then the error explains base_url must be the org URL."""
    with pytest.raises(ValidationError, match="not the -admin console URL"):
        ssws_settings(base_url="https://acme-admin.okta.com")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_OKTA_* variables,
    When OktaSettings is built without arguments,
    Then it reads them, trims the trailing slash and keeps the token secret."""
    monkeypatch.setenv("STANCH_OKTA_BASE_URL", "https://acme.okta.com/")
    monkeypatch.setenv("STANCH_OKTA_API_TOKEN", "00envtoken")
    monkeypatch.setenv("STANCH_OKTA_TIMEOUT_SECONDS", "3.5")
    monkeypatch.setenv("STANCH_OKTA_SCOPES", "okta.users.read,okta.logs.read okta.users.manage")
    settings = OktaSettings()
    assert settings.auth_mode == "ssws"
    assert settings.base_url == "https://acme.okta.com"
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "00envtoken"
    assert settings.timeout_seconds == 3.5
    assert settings.scopes == ["okta.users.read", "okta.logs.read", "okta.users.manage"]
    assert "00envtoken" not in repr(settings)


def test_client_assertion_claims_and_signature() -> None:
    """Given private_key_jwt settings,
    When two client assertions are built,
    Then each is RS256 with the key id, iss=sub=client_id, aud=the token endpoint, lives at
    most five minutes, has a unique jti, and verifies with the app's public key."""
    settings = jwt_settings(base_url="https://acme.okta.com")
    key = load_private_key(settings)
    first = client_assertion(settings, key, now=1_700_000_000)
    second = client_assertion(settings, key, now=1_700_000_000)

    header_b64, claims_b64, signature_b64 = first.split(".")
    header, claims = _decode(header_b64), _decode(claims_b64)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": OktaSimulator.LAB_KEY_ID}
    assert claims["iss"] == claims["sub"] == OktaSimulator.LAB_CLIENT_ID
    assert claims["aud"] == "https://acme.okta.com/oauth2/v1/token"
    assert claims["iat"] == 1_700_000_000
    assert 0 < int(claims["exp"]) - 1_700_000_000 <= 300  # type: ignore[call-overload]
    assert claims["jti"] != _decode(second.split(".")[1])["jti"]
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    key.public_key().verify(  # raises InvalidSignature if wrong
        signature, f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


async def test_private_key_jwt_end_to_end_fetches_one_token_for_concurrent_calls(
    sim: OktaSimulator, wire: RecordingTransport
) -> None:
    """Given private_key_jwt settings registered with the simulated service app,
    When five calls run concurrently,
    Then one token is requested (client credentials + signed assertion) and every API
    call carries it as a Bearer token."""
    user_id = sim.add_user("jwt@example.com")

    async with connect(jwt_settings(), wire) as client:
        idp = OktaIdentity(client)
        accounts = await asyncio.gather(*(idp.get_user(user_id) for _ in range(5)))
        await idp.suspend_user(user_id, reason="jwt mode")

    assert {a.id for a in accounts} == {user_id}
    assert sim.user_status(user_id) == "SUSPENDED"
    token_requests = [r for r in wire.sent if r.url.path == "/oauth2/v1/token"]
    assert len(token_requests) == 1
    form = dict(httpx.QueryParams(token_requests[0].content.decode()))
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assert set(form["scope"].split()) == {"okta.users.manage", "okta.logs.read"}
    assert "authorization" not in token_requests[0].headers
    api_calls = [r for r in wire.sent if r.url.path.startswith("/api/v1/")]
    assert len(api_calls) == 7  # 5 reads, then suspend: its read and its POST
    assert {r.headers["authorization"].split()[0] for r in api_calls} == {"Bearer"}


async def test_revoked_token_is_replaced_once(sim: OktaSimulator, wire: RecordingTransport) -> None:
    """Given a cached Bearer token that Okta has since revoked,
    When the next call gets 401,
    Then a fresh token is fetched (new assertion, new jti) and the call succeeds."""
    user_id = sim.add_user("rot@example.com")
    async with connect(jwt_settings(), wire) as client:
        idp = OktaIdentity(client)
        await idp.get_user(user_id)
        sim.revoke_access_tokens()
        account = await idp.get_user(user_id)
    assert account.id == user_id
    assert sum(1 for r in wire.sent if r.url.path == "/oauth2/v1/token") == 2


async def test_private_key_jwt_with_unregistered_key_is_auth_error(sim: OktaSimulator) -> None:
    """Given an assertion signed with a key the service app does not know,
    When a call needs a token,
    Then Okta's invalid_client becomes AuthError with the OAuth description."""
    user_id = sim.add_user("nokey@example.com")
    settings = jwt_settings(private_key_pem=SecretStr(_other_key_pem()))
    async with connect(settings, sim.transport()) as client:
        with pytest.raises(AuthError) as caught:
            await OktaIdentity(client).get_user(user_id)
    assert (caught.value.status_code, caught.value.vendor_code) == (401, "invalid_client")
    assert "signature is invalid" in str(caught.value)


async def test_private_key_jwt_with_unknown_scope_is_rejected(sim: OktaSimulator) -> None:
    """Given a scope the service app was not granted,
    When a token is requested,
    Then the call fails with Okta's invalid_scope (a permanent error, not retried)."""
    from integrations.errors import RejectedError

    user_id = sim.add_user("scope@example.com")
    settings = jwt_settings(scopes=["okta.users.manage", "okta.apps.manage"])
    async with connect(settings, sim.transport()) as client:
        with pytest.raises(RejectedError) as caught:
            await OktaIdentity(client).get_user(user_id)
    assert caught.value.vendor_code == "invalid_scope"
    assert "okta.apps.manage" in str(caught.value)


async def test_token_with_only_logs_scope_cannot_suspend(sim: OktaSimulator) -> None:
    """Given a token granted okta.logs.read only,
    When suspend_user is called,
    Then Okta's 403 E0000006 is an AuthError."""
    user_id = sim.add_user("scoped@example.com")
    async with connect(jwt_settings(scopes=["okta.logs.read"]), sim.transport()) as client:
        with pytest.raises(AuthError) as caught:
            await OktaIdentity(client).suspend_user(user_id, reason="test")
    assert (caught.value.status_code, caught.value.vendor_code) == (403, "E0000006")


@respx.mock(assert_all_called=True)
async def test_dpop_bound_token_is_refused(respx_mock: respx.MockRouter) -> None:
    """Given a service app that requires DPoP (token_type DPoP),
    When the adapter obtains its token,
    Then it raises AuthError telling the operator to turn DPoP off, and sends no API call."""
    respx_mock.post("https://acme.okta.com/oauth2/v1/token").respond(
        200, json={"token_type": "DPoP", "expires_in": 3600, "access_token": "tok", "scope": "x"}
    )
    settings = jwt_settings(base_url="https://acme.okta.com")
    async with connect(settings) as client:
        with pytest.raises(AuthError, match="DPoP"):
            await OktaIdentity(client).get_user("00u1")
    assert len(respx_mock.calls) == 1


async def test_expired_assertion_is_refused_by_the_simulator(sim: OktaSimulator) -> None:
    """Given an assertion whose exp has passed,
    When it is posted to the simulated token endpoint,
    Then the simulator answers 401 invalid_client (it checks exp, not just the signature)."""
    settings = jwt_settings()
    stale = client_assertion(settings, load_private_key(settings), now=time.time() - 3600)
    async with httpx.AsyncClient(transport=sim.transport(), base_url=sim.base_url) as raw:
        response = await raw.post(
            "/oauth2/v1/token",
            data={
                "grant_type": "client_credentials",
                "scope": "okta.users.read",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": stale,
            },
        )
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "The client_assertion token is expired.",
    }
