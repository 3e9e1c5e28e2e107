"""The exact requests FortiGateFirewall sends, and how it reads envelopes (respx, no simulator).

Response bodies follow the envelope in tests/vendor_specs/fortigate.md §2 and §3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from integrations.errors import (
    AuthError,
    NotFoundError,
    RejectedError,
    TransientError,
    VendorUnavailable,
)
from integrations.fortigate import FortiGateFirewall, connect

from .conftest import settings

BASE = "https://fw.example.invalid:8443"
TOKEN = "tok-3f9a"
IP = "198.51.100.7"
BANNED = "/api/v2/monitor/user/banned"


def envelope(results: Any = None, **extra: Any) -> dict[str, Any]:
    """A FortiOS success envelope (§2)."""
    body: dict[str, Any] = {"http_method": "GET", "vdom": "root", "path": "user"}
    if results is not None:
        body["results"] = results
    body |= {"status": "success", "http_status": 200, "serial": "FGVM00000000000"}
    return body | extra


def check(banned: bool) -> httpx.Response:
    return httpx.Response(200, json=envelope({"ip_address": IP, "is_banned": banned}))


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def firewall() -> Any:
    async with connect(settings(base_url=BASE, api_token=TOKEN)) as http:
        yield FortiGateFirewall(http)


async def test_block_sends_bearer_token_vdom_and_documented_body(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given an unbanned IP, When blocked for an hour, Then check, add_users with
    {"ip_addresses": [ip], "expiry": 3600}, check again -- each with the Bearer token
    and vdom=root, and the token never in the URL (§1, §3)."""
    checks = router.get(f"{BANNED}/check").mock(side_effect=[check(False), check(True)])
    add = router.post(f"{BANNED}/add_users").mock(
        return_value=httpx.Response(200, json=envelope({}, action="add_users"))
    )

    await firewall.block_ip(IP, ttl_seconds=3600, reason="case 123")

    assert checks.call_count == 2
    assert add.call_count == 1
    sent = add.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert dict(sent.url.params) == {"vdom": "root"}
    assert json.loads(sent.content) == {"ip_addresses": [IP], "expiry": 3600}
    first_check = checks.calls[0].request
    assert dict(first_check.url.params) == {"vdom": "root", "ip_address": IP}
    for call in router.calls:
        assert TOKEN not in str(call.request.url)
        assert "access_token" not in call.request.url.params


@pytest.mark.parametrize("ttl", [None, 0])
async def test_block_without_ttl_sends_expiry_zero(
    router: respx.MockRouter, firewall: FortiGateFirewall, ttl: int | None
) -> None:
    """Given no TTL, When blocking, Then expiry 0 is sent (§3: 0 = indefinite)."""
    router.get(f"{BANNED}/check").mock(side_effect=[check(False), check(True)])
    add = router.post(f"{BANNED}/add_users").mock(
        return_value=httpx.Response(200, json=envelope({}))
    )

    await firewall.block_ip(IP, ttl_seconds=ttl, reason="r")

    assert json.loads(add.calls.last.request.content)["expiry"] == 0


async def test_already_banned_ip_is_not_posted(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given banned/check says is_banned, When blocking, Then no add_users and changed=False."""
    router.get(f"{BANNED}/check").mock(return_value=check(True))
    add = router.post(f"{BANNED}/add_users")

    receipt = await firewall.block_ip(IP, ttl_seconds=60, reason="r")

    assert receipt.changed is False
    assert not add.called


async def test_unblock_sends_clear_users(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given a banned IP, When unblocked, Then clear_users with {"ip_addresses": [ip]}."""
    router.get(f"{BANNED}/check").mock(side_effect=[check(True), check(False)])
    clear = router.post(f"{BANNED}/clear_users").mock(
        return_value=httpx.Response(200, json=envelope({}))
    )

    receipt = await firewall.unblock_ip(IP)

    assert receipt.changed is True
    assert json.loads(clear.calls.last.request.content) == {"ip_addresses": [IP]}
    assert dict(clear.calls.last.request.url.params) == {"vdom": "root"}


async def test_unbanned_ip_is_not_cleared(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given banned/check says not banned, When unblocking, Then no clear_users."""
    router.get(f"{BANNED}/check").mock(return_value=check(False))
    clear = router.post(f"{BANNED}/clear_users")

    assert (await firewall.unblock_ip(IP)).changed is False
    assert not clear.called


async def test_list_reads_documented_rows(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given the documented banned-list rows (epoch created/expires), When listed, Then
    each row becomes a BlockedIP with expires_at from `expires`."""
    rows = [
        {"ip_address": IP, "source": "IPS", "ipv6": 0, "created": 1760000000,
         "expires": 1760003600},
        {"ip_address": "2001:db8::7", "source": "Administrative", "ipv6": 1,
         "created": 1760000000, "expires": 0},
    ]  # fmt: skip
    router.get(BANNED).mock(return_value=httpx.Response(200, json=envelope(rows)))

    blocked = await firewall.list_blocked()

    assert [(b.ip, b.expires_at and b.expires_at.timestamp()) for b in blocked] == [
        (IP, 1760003600.0),
        ("2001:db8::7", None),
    ]


async def test_success_http_with_error_envelope_is_an_error(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given HTTP 200 whose envelope says status=error/http_status 500/error -5, When
    blocking, Then it is not success: VendorUnavailable carrying code -5 (§2, §8)."""
    router.get(f"{BANNED}/check").mock(return_value=check(False))
    router.post(f"{BANNED}/add_users").mock(
        return_value=httpx.Response(
            200, json={"http_method": "POST", "status": "error", "http_status": 500, "error": -5}
        )
    )

    with pytest.raises(VendorUnavailable) as caught:
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert caught.value.vendor_code == "-5"


@pytest.mark.parametrize(
    ("http_status", "error", "expected"),
    [(404, -3, NotFoundError), (424, None, RejectedError), (401, None, AuthError)],
)
async def test_error_envelope_statuses_map_like_http_statuses(
    router: respx.MockRouter,
    firewall: FortiGateFirewall,
    http_status: int,
    error: int | None,
    expected: type[Exception],
) -> None:
    """Given a non-2xx with the documented error envelope, When listing, Then the error
    type follows the documented status (404 absent, 424 invalid, 401 bad token)."""
    body: dict[str, Any] = {"status": "error", "http_status": http_status}
    if error is not None:
        body["error"] = error
    router.get(BANNED).mock(return_value=httpx.Response(http_status, json=body))

    with pytest.raises(expected) as caught:
        await firewall.list_blocked()
    assert caught.value.status_code == http_status  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["http", "envelope"])
async def test_429_lockout_is_auth_not_transient(
    router: respx.MockRouter, firewall: FortiGateFirewall, where: str
) -> None:
    """Given 429 as HTTP status or inside the envelope, When listing, Then AuthError (the
    auth lockout, §1), which is never a TransientError so nothing retries it."""
    status = 429 if where == "http" else 200
    router.get(BANNED).mock(
        return_value=httpx.Response(
            status,
            headers={"Retry-After": "5"},
            json={"status": "error", "http_status": 429},
        )
    )

    with pytest.raises(AuthError) as caught:
        await firewall.list_blocked()
    assert caught.value.status_code == 429
    assert not isinstance(caught.value, TransientError)


async def test_html_200_is_not_success(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given a 200 that is an HTML page (a proxy, not FortiOS), When listing, Then an error."""
    router.get(BANNED).mock(return_value=httpx.Response(200, text="<html>login</html>"))

    with pytest.raises(VendorUnavailable):
        await firewall.list_blocked()


async def test_ban_not_confirmed_after_add_users_is_an_error(
    router: respx.MockRouter, firewall: FortiGateFirewall
) -> None:
    """Given add_users succeeds but banned/check still says not banned, When blocking,
    Then RejectedError rather than a receipt claiming the IP is blocked."""
    router.get(f"{BANNED}/check").mock(return_value=check(False))
    router.post(f"{BANNED}/add_users").mock(return_value=httpx.Response(200, json=envelope({})))

    with pytest.raises(RejectedError):
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
