"""Exact request forms, checked with respx against the documented Graph operations."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from integrations.entra import EntraIdentity, EntraRiskDetections, connect
from integrations.errors import AuthError, RateLimited, RejectedError
from tests.integrations.entra.support import lab

GRAPH = "https://graph.microsoft.com/v1.0"
TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
USER = {
    "id": "29f270bb-4d23-4f68-8a57-dc73dc0d4caf",
    "userPrincipalName": "ann@contoso.com",
    "displayName": "Ann",
    "mail": "ann@contoso.com",
    "accountEnabled": True,
}


@pytest.fixture
async def mocked() -> AsyncIterator[respx.MockRouter]:
    settings = lab()
    with respx.mock(assert_all_called=False) as router:
        router.post(TOKEN_URL.format(tenant=settings.tenant_id), name="token").respond(
            json={"token_type": "Bearer", "expires_in": 3599, "access_token": "tok-1"}
        )
        yield router


@pytest.fixture
async def client(mocked: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with connect(lab()) as c:
        yield c


async def test_token_request_is_client_credentials(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given lab settings, When the first Graph call runs, Then the token request is the
    documented form post and Graph gets the token as a Bearer header."""
    mocked.get(f"{GRAPH}/users/{USER['id']}").respond(json=USER)

    await EntraIdentity(client).get_user(str(USER["id"]))

    token_request = mocked["token"].calls.last.request
    form = {k: v[0] for k, v in parse_qs(token_request.content.decode()).items()}
    settings = lab()
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in token_request.headers
    assert form == {
        "grant_type": "client_credentials",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret.get_secret_value(),
        "scope": "https://graph.microsoft.com/.default",
    }
    assert mocked.calls.last.request.headers["authorization"] == "Bearer tok-1"


async def test_get_user_selects_account_enabled(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given accountEnabled is not a default property, When a user is read, Then $select asks
    for it."""
    route = mocked.get(f"{GRAPH}/users/{USER['id']}").respond(json=USER)

    await EntraIdentity(client).get_user(str(USER["id"]))

    selected = route.calls.last.request.url.params["$select"].split(",")
    assert "accountEnabled" in selected
    assert "id" in selected


async def test_upn_with_ext_and_plus_is_percent_encoded(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given a guest UPN with #EXT# and +, When found, Then # is %23 and + is %2B in the path."""
    upn = "bob+sec_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    route = mocked.get(url__startswith=f"{GRAPH}/users/").respond(
        json={**USER, "userPrincipalName": upn}
    )

    found = await EntraIdentity(client).find_user(upn)

    raw_path = route.calls.last.request.url.raw_path.decode().split("?")[0]
    assert raw_path == "/v1.0/users/bob%2Bsec_fabrikam.com%23EXT%23@contoso.onmicrosoft.com"
    assert found is not None and found.login == upn


async def test_dollar_upn_uses_documented_filter(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given a UPN starting with $ and holding a quote, When found, Then GET /users uses
    $filter=userPrincipalName eq '...' with the quote doubled."""
    route = mocked.get(f"{GRAPH}/users").respond(json={"value": []})

    assert await EntraIdentity(client).find_user("$o'neil@contoso.com") is None

    params = route.calls.last.request.url.params
    assert params["$filter"] == "userPrincipalName eq '$o''neil@contoso.com'"


@pytest.mark.parametrize(("verb", "body"), [("suspend_user", False), ("unsuspend_user", True)])
async def test_patch_account_enabled_body(
    mocked: respx.MockRouter, client: httpx.AsyncClient, verb: str, body: bool
) -> None:
    """Given a user in the other state, When (un)suspended, Then PATCH /users/{id} sends exactly
    {"accountEnabled": <bool>} as JSON."""
    mocked.get(f"{GRAPH}/users/{USER['id']}").respond(json={**USER, "accountEnabled": not body})
    patch = mocked.patch(f"{GRAPH}/users/{USER['id']}").respond(
        204, headers={"request-id": "req-9"}
    )

    receipt = await getattr(EntraIdentity(client), verb)(str(USER["id"]), reason="INC-7")

    request = patch.calls.last.request
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"accountEnabled": body}
    assert receipt.vendor_request_id == "req-9"


async def test_expire_password_body(mocked: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """Given a user, When the password is expired, Then the documented passwordProfile PATCH."""
    patch = mocked.patch(f"{GRAPH}/users/{USER['id']}").respond(204)

    await EntraIdentity(client).expire_password(str(USER["id"]))

    assert json.loads(patch.calls.last.request.content) == {
        "passwordProfile": {"forceChangePasswordNextSignIn": True}
    }


async def test_revoke_value_false_is_rejected(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given revokeSignInSessions answering 200 {"value": false}, When revoking, Then the
    adapter does not report success."""
    mocked.post(f"{GRAPH}/users/{USER['id']}/revokeSignInSessions").respond(json={"value": False})

    with pytest.raises(RejectedError, match="value=false"):
        await EntraIdentity(client).revoke_sessions(str(USER["id"]))


async def test_confirm_compromised_body(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given a user id, When confirmed compromised, Then the body is {"userIds": [id]}."""
    route = mocked.post(f"{GRAPH}/identityProtection/riskyUsers/confirmCompromised").respond(204)

    await EntraIdentity(client).confirm_compromised(str(USER["id"]))

    assert json.loads(route.calls.last.request.content) == {"userIds": [USER["id"]]}


async def test_fetch_filter_form(mocked: respx.MockRouter, client: httpx.AsyncClient) -> None:
    """Given a since time with microseconds in UTC+2, When fetching, Then $filter compares
    detectedDateTime ge the UTC second (rounded down) and $top is sent."""
    route = mocked.get(f"{GRAPH}/identityProtection/riskDetections").respond(json={"value": []})
    since = datetime(2024, 3, 5, 12, 30, 15, 999_000, tzinfo=timezone(timedelta(hours=2)))

    await EntraRiskDetections(client, page_size=50).fetch_alerts(since)

    params = route.calls.last.request.url.params
    assert params["$filter"] == "detectedDateTime ge 2024-03-05T10:30:15Z"
    assert params["$top"] == "50"


async def test_retry_after_header_value(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given a 429 with Retry-After: 7, When called, Then retry_after is 7 seconds."""
    mocked.get(f"{GRAPH}/users/{USER['id']}").respond(
        429,
        headers={"Retry-After": "7"},
        json={"error": {"code": "TooManyRequests", "message": "Slow down"}},
    )

    with pytest.raises(RateLimited) as caught:
        await EntraIdentity(client).get_user(str(USER["id"]))

    assert caught.value.retry_after == 7.0


async def test_forbidden_carries_graph_code(
    mocked: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    """Given 403 Authorization_RequestDenied (disabling an admin), When suspending, Then
    AuthError with Graph's code, message and request-id."""
    mocked.get(f"{GRAPH}/users/{USER['id']}").respond(json=USER)
    mocked.patch(f"{GRAPH}/users/{USER['id']}").respond(
        403,
        json={
            "error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation.",
                "innerError": {"date": "2024-03-05T10:00:00", "request-id": "rid-1"},
            }
        },
    )

    with pytest.raises(AuthError) as caught:
        await EntraIdentity(client).suspend_user(str(USER["id"]), reason="x")

    assert caught.value.vendor_code == "Authorization_RequestDenied"
    assert "Insufficient privileges" in str(caught.value)
    assert "rid-1" in str(caught.value)
