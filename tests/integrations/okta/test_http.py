"""What the Okta adapter puts on the wire and how it reads Okta's error envelope (respx)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
import respx
from pydantic import SecretStr

from integrations.errors import AuthError, RateLimited, RejectedError
from integrations.okta import OktaIdentity, OktaSettings, OktaSystemLog, connect
from tests.integrations.okta.conftest import ssws_settings

ORG = "https://acme.okta.com"
USER = {
    "id": "00ub0oNGTSWTBKOLGLNR",
    "status": "ACTIVE",
    "profile": {"login": "first.last+tag@example.com", "email": "first.last+tag@example.com"},
}


def _settings() -> OktaSettings:
    return ssws_settings(base_url=ORG, api_token=SecretStr("00secret-ssws"))


@respx.mock(assert_all_called=True)
async def test_ssws_and_accept_headers_are_exact(respx_mock: respx.MockRouter) -> None:
    """Given SSWS settings,
    When the adapter reads a user,
    Then the request carries exactly 'Authorization: SSWS <token>' and
    'Accept: application/json'."""
    route = respx_mock.get(f"{ORG}/api/v1/users/00ub0oNGTSWTBKOLGLNR").respond(200, json=USER)
    async with connect(_settings()) as client:
        await OktaIdentity(client).get_user("00ub0oNGTSWTBKOLGLNR")
    request = route.calls.last.request
    assert request.headers["Authorization"] == "SSWS 00secret-ssws"
    assert request.headers["Accept"] == "application/json"


async def test_token_is_not_kept_in_client_headers() -> None:
    """Given an SSWS client,
    When its default headers are inspected (as a debug dump would),
    Then the token is not among them: it is added per request by the auth hook."""
    async with connect(_settings()) as client:
        assert "authorization" not in client.headers
        assert "00secret-ssws" not in repr(client.headers)


@respx.mock(assert_all_called=True)
async def test_login_with_at_and_plus_is_url_encoded(respx_mock: respx.MockRouter) -> None:
    """Given a login with '@' and '+',
    When find_user is called,
    Then the path segment is percent-encoded (%40, %2B), so '+' is not read as a space."""
    route = respx_mock.get(url__regex=rf"^{ORG}/api/v1/users/.+").respond(200, json=USER)
    async with connect(_settings()) as client:
        account = await OktaIdentity(client).find_user("first.last+tag@example.com")
    assert account is not None and account.login == "first.last+tag@example.com"
    raw = route.calls.last.request.url.raw_path.decode()
    assert raw == "/api/v1/users/first.last%2Btag%40example.com"


@respx.mock(assert_all_called=True)
async def test_error_envelope_becomes_the_error_message(respx_mock: respx.MockRouter) -> None:
    """Given Okta's 403 envelope with a summary, causes and an errorId,
    When the adapter meets it,
    Then AuthError carries E0000006, and the message holds summary, cause and errorId."""
    respx_mock.post(f"{ORG}/api/v1/users/00u1/lifecycle/reset_factors").respond(
        403,
        json={
            "errorCode": "E0000006",
            "errorSummary": "You do not have permission to perform the requested action",
            "errorLink": "E0000006",
            "errorId": "oaeXYZ",
            "errorCauses": [{"errorSummary": "Admin role required"}],
        },
    )
    async with connect(_settings()) as client:
        with pytest.raises(AuthError) as caught:
            await OktaIdentity(client).reset_factors("00u1")
    message = str(caught.value)
    assert caught.value.vendor_code == "E0000006"
    assert "You do not have permission to perform the requested action" in message
    assert "Admin role required" in message
    assert "oaeXYZ" in message
    assert "/api/v1/users/00u1/lifecycle/reset_factors" in message


@respx.mock(assert_all_called=True)
async def test_non_json_error_body_falls_back_to_status(respx_mock: respx.MockRouter) -> None:
    """Given a 400 whose body is a proxy's HTML page,
    When the adapter meets it,
    Then it is still a RejectedError, with no vendor code invented."""
    respx_mock.post(f"{ORG}/api/v1/users/00u1/lifecycle/reset_factors").respond(
        400, text="<html>bad gateway config</html>"
    )
    async with connect(_settings()) as client:
        with pytest.raises(RejectedError) as caught:
            await OktaIdentity(client).reset_factors("00u1")
    assert caught.value.vendor_code is None
    assert caught.value.status_code == 400


@respx.mock(assert_all_called=True)
async def test_429_reset_epoch_is_read_not_retry_after(respx_mock: respx.MockRouter) -> None:
    """Given a 429 with X-Rate-Limit-Reset 42 s ahead and no Retry-After,
    When the adapter meets it,
    Then RateLimited.retry_after is about 42 s, computed from the epoch header."""
    reset = int(time.time()) + 42
    respx_mock.get(f"{ORG}/api/v1/users/00u1").respond(
        429,
        headers={
            "X-Rate-Limit-Limit": "600",
            "X-Rate-Limit-Remaining": "0",
            "X-Rate-Limit-Reset": str(reset),
        },
        json={"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit"},
    )
    async with connect(_settings()) as client:
        with pytest.raises(RateLimited) as caught:
            await OktaIdentity(client).get_user("00u1")
    assert caught.value.retry_after == pytest.approx(reset - time.time(), abs=1.5)
    assert caught.value.vendor_code == "E0000047"


@respx.mock(assert_all_called=True)
async def test_system_log_next_link_never_leaves_the_org(respx_mock: respx.MockRouter) -> None:
    """Given a System Log page whose next link names another host,
    When fetch_alerts follows it,
    Then the request goes to the org's own host (credentials never travel elsewhere)."""
    first = respx_mock.get(f"{ORG}/api/v1/logs", params={"limit": "1000"}).mock(
        return_value=httpx.Response(
            200,
            json=[],
            headers={"Link": '<https://evil.example/api/v1/logs?after=abc>; rel="next"'},
        )
    )
    # An empty first page ends the poll: nothing more should be requested at all.
    async with connect(_settings()) as client:
        assert await OktaSystemLog(client).fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC)) == []
    assert first.call_count == 1
    assert first.calls.last.request.url.params["since"] == "2024-01-01T00:00:00.000Z"


@respx.mock(assert_all_called=False)  # the foreign-host route must stay uncalled
async def test_system_log_follows_next_link_on_the_org_host(respx_mock: respx.MockRouter) -> None:
    """Given a non-empty System Log page linking to another host,
    When fetch_alerts follows the next link,
    Then it requests the link's path and query from the org host, not the foreign host."""
    foreign = respx_mock.get(url__startswith="https://evil.example/")
    first = respx_mock.get(f"{ORG}/api/v1/logs", params={"sortOrder": "ASCENDING"}).mock(
        side_effect=[
            httpx.Response(
                200,
                json=[
                    {
                        "uuid": "u1",
                        "eventType": "user.session.start",
                        "published": "2024-08-13T15:58:20.353Z",
                    }
                ],
                headers={"Link": '<https://evil.example/api/v1/logs?after=c1>; rel="next"'},
            )
        ]
    )
    second = respx_mock.get(f"{ORG}/api/v1/logs", params={"after": "c1"}).respond(200, json=[])
    async with connect(_settings()) as client:
        await OktaSystemLog(client).fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC))
    assert first.call_count == 1
    assert second.call_count == 1
    assert foreign.call_count == 0
