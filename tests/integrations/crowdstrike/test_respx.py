"""Edge cases against mocked HTTP: exact headers, errors inside 2xx bodies, FQL quoting."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from integrations.crowdstrike import CrowdStrikeAlerts, CrowdStrikeEDR, connect
from integrations.errors import AuthError, RateLimited, RejectedError, VendorUnavailable

from .conftest import sample, settings

BASE = "https://api.crowdstrike.com"
AID = "4b0a5b2c8f7d4e6a9c1b2d3e4f5a6b7c"
TOKEN = {"access_token": "tok-123", "token_type": "bearer", "expires_in": 1799}


def envelope(
    resources: list[object], errors: list[dict[str, object]] | None = None
) -> dict[str, object]:
    return {
        "meta": {"query_time": 0.01, "trace_id": "t-1"},
        "resources": resources,
        "errors": errors or [],
    }


@pytest.fixture
async def mock() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        router.post("/oauth2/token").respond(201, json=TOKEN)
        yield router


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with connect(settings(client_id="cid-1", client_secret="sec-1")) as client:
        yield client


async def test_token_request_and_bearer_headers(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given a contain call, when it is sent, then the token request is a bare form post and
    the action carries the bearer, JSON content type, action_name and ids body."""
    action = mock.post("/devices/entities/devices-actions/v2").respond(
        202, json=envelope([{"id": AID, "path": ""}])
    )
    receipt = await CrowdStrikeEDR(http).contain_host(AID, reason="r")
    assert receipt.changed is True

    token_request = mock.calls[0].request
    assert token_request.url.path == "/oauth2/token"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in token_request.headers
    assert parse_qs(token_request.content.decode()) == {
        "client_id": ["cid-1"],
        "client_secret": ["sec-1"],
    }

    sent = action.calls.last.request
    assert sent.headers["Authorization"] == "Bearer tok-123"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept"] == "application/json"
    assert sent.url.params["action_name"] == "contain"
    assert json.loads(sent.content) == {"ids": [AID]}


async def test_hostname_quote_is_escaped_in_fql(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given a hostname containing a quote and a backslash, when looked up, then the FQL
    literal escapes both so the value cannot end the string."""
    query = mock.get("/devices/queries/devices/v1").respond(200, json=envelope([]))
    assert await CrowdStrikeEDR(http).find_host("AB'C\\D") is None
    filters = [c.request.url.params["filter"] for c in query.calls]
    assert filters[0] == "hostname:'AB\\'C\\\\D'"
    assert all(f.startswith("hostname:'") and f.endswith("'") for f in filters)
    assert query.calls[0].request.url.params["sort"] == "last_seen.desc"


@pytest.mark.parametrize("status", [200, 202])
async def test_partial_error_in_body_is_not_success(
    mock: respx.MockRouter, http: httpx.AsyncClient, status: int
) -> None:
    """Given the documented sample with resources *and* an errors[] entry, when it arrives
    as a 2xx, then the adapter raises the entry's error instead of succeeding."""
    payload = sample("partial_error_in_body_response.json")
    with pytest.raises(RejectedError) as caught:
        if status == 202:
            mock.post("/devices/entities/devices-actions/v2").respond(status, json=payload)
            await CrowdStrikeEDR(http).contain_host(AID, reason="r")
        else:
            mock.get("/alerts/queries/alerts/v2").respond(status, json=payload)
            await CrowdStrikeAlerts(http).fetch_alerts(datetime(2026, 1, 1, tzinfo=UTC))
    assert "Invalid policy ID 121231" in str(caught.value)
    assert caught.value.vendor_code == "400"


async def test_scope_error_inside_200_is_auth_error(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given a 200 whose errors[] reports 403 (missing API scope), when a host is looked up,
    then AuthError, not "no such host"."""
    mock.get("/devices/queries/devices/v1").respond(
        200, json=envelope([], [{"code": 403, "message": "access denied, scope missing"}])
    )
    with pytest.raises(AuthError):
        await CrowdStrikeEDR(http).find_host("WS-0042")


async def test_contain_409_at_http_level_is_unchanged(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given the documented 409 answered for the whole request, when containing, then the
    receipt is unchanged and reports the state read back from the host."""
    mock.post("/devices/entities/devices-actions/v2").respond(
        409, json=envelope([], [{"code": 409, "message": f"{AID} already contained"}])
    )
    mock.get("/devices/entities/devices/v2").respond(
        200, json=envelope([{"device_id": AID, "hostname": "WS-1", "status": "contained"}])
    )
    receipt = await CrowdStrikeEDR(http).contain_host(AID, reason="r")
    assert (receipt.changed, receipt.state) == (False, "contained")


async def test_429_epoch_header_becomes_seconds(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given a 429 naming a retry time 30 s ahead as epoch seconds, when a call is throttled,
    then retry_after is about 30, not a timestamp."""
    at = int(time.time()) + 30
    mock.get("/devices/entities/devices/v2").respond(
        429,
        headers={"X-Ratelimit-Retryafter": str(at)},
        json=envelope([], [{"code": 429, "message": "API rate limit exceeded."}]),
    )
    with pytest.raises(RateLimited) as caught:
        await CrowdStrikeEDR(http).get_host(AID)
    assert caught.value.retry_after is not None
    assert 28 <= caught.value.retry_after <= 31


async def test_html_error_page_still_maps_by_status(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given a proxy's HTML 502, when a call fails, then VendorUnavailable without parsing."""
    mock.get("/devices/entities/devices/v2").respond(502, text="<html>bad gateway</html>")
    with pytest.raises(VendorUnavailable) as caught:
        await CrowdStrikeEDR(http).get_host(AID)
    assert caught.value.status_code == 502


async def test_alerts_pages_by_offset_until_total(
    mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    """Given three alerts and page size two, when fetched, then the query is paged by offset
    with pipe sort syntax and each page's ids are fetched by composite id."""
    alerts = sample("alerts_v2_entities_response.json")["resources"]
    third = dict(alerts[1], composite_id="cid:fcs:ioa-211:third")
    ids = [alerts[0]["composite_id"], alerts[1]["composite_id"], third["composite_id"]]
    pages = [
        {**envelope(ids[:2]), "meta": {"pagination": {"offset": 0, "limit": 2, "total": 3}}},
        {**envelope(ids[2:]), "meta": {"pagination": {"offset": 2, "limit": 2, "total": 3}}},
    ]
    query = mock.get("/alerts/queries/alerts/v2").mock(
        side_effect=[httpx.Response(200, json=p) for p in pages]
    )
    details = mock.post("/alerts/entities/alerts/v2").mock(
        side_effect=[
            httpx.Response(200, json=envelope(alerts[:2])),
            httpx.Response(200, json=envelope([third])),
        ]
    )
    since = datetime(2026, 4, 20, 22, 0, tzinfo=UTC)
    findings = await CrowdStrikeAlerts(http, page_size=2).fetch_alerts(since)
    assert [f.uid for f in findings] == ids
    params = [c.request.url.params for c in query.calls]
    assert [p["offset"] for p in params] == ["0", "2"]
    assert params[0]["sort"] == "created_timestamp|asc"
    assert params[0]["filter"] == "created_timestamp:>='2026-04-20T22:00:00Z'"
    assert json.loads(details.calls[1].request.content) == {"composite_ids": ids[2:]}
