"""FortiGateFirewall against the simulator, in process: the Firewall contract end to end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import httpx
import pytest

from integrations.capabilities import Firewall
from integrations.errors import (
    AuthError,
    RejectedError,
    TransientError,
    VendorTimeout,
    VendorUnavailable,
)
from integrations.fortigate import FortiGateFirewall, FortiGateSimulator, connect

from .conftest import Clock, settings

IP = "198.51.100.7"


def test_adapter_implements_the_firewall_protocol(firewall: FortiGateFirewall) -> None:
    """Given the adapter, When checked against the Firewall protocol, Then it conforms."""
    assert isinstance(firewall, Firewall)
    assert firewall.vendor == "fortigate"


async def test_block_then_block_again_is_unchanged(firewall: FortiGateFirewall) -> None:
    """Given an unbanned IP, When it is blocked twice, Then only the first call changes state."""
    first = await firewall.block_ip(IP, ttl_seconds=3600, reason="case 123")
    second = await firewall.block_ip(IP, ttl_seconds=3600, reason="case 123")

    assert (first.changed, first.verb, first.target, first.state) == (
        True,
        "block_ip",
        IP,
        "blocked",
    )
    assert second.changed is False
    assert [b.ip for b in await firewall.list_blocked()] == [IP]


async def test_list_shows_the_ban_with_its_expiry(
    firewall: FortiGateFirewall, clock: Clock
) -> None:
    """Given a ban with a TTL, When listed, Then expires_at is the ban time plus the TTL."""
    await firewall.block_ip(IP, ttl_seconds=600, reason="r")

    [blocked] = await firewall.list_blocked()

    assert blocked.ip == IP
    assert blocked.vendor == "fortigate"
    assert blocked.expires_at == datetime.fromtimestamp(int(clock.now) + 600, tz=UTC)


@pytest.mark.parametrize("ttl", [None, 0])
async def test_no_ttl_bans_indefinitely(
    firewall: FortiGateFirewall, clock: Clock, ttl: int | None
) -> None:
    """Given no TTL (None or 0), When blocked, Then the ban has no expiry and outlives a year.

    fortigate.md §3: expiry 0 = indefinite.
    """
    await firewall.block_ip(IP, ttl_seconds=ttl, reason="r")
    clock.advance(366 * 24 * 3600)

    assert [(b.ip, b.expires_at) for b in await firewall.list_blocked()] == [(IP, None)]


async def test_ban_expires_after_its_ttl(firewall: FortiGateFirewall, clock: Clock) -> None:
    """Given a 60 s ban, When 61 s pass, Then the IP is no longer listed and can be re-banned."""
    await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    clock.advance(59)
    assert [b.ip for b in await firewall.list_blocked()] == [IP]

    clock.advance(2)

    assert await firewall.list_blocked() == []
    again = await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert again.changed is True


async def test_unblock_then_unblock_again_is_unchanged(firewall: FortiGateFirewall) -> None:
    """Given a banned IP, When unblocked twice, Then only the first call changes state."""
    await firewall.block_ip(IP, ttl_seconds=None, reason="r")

    first = await firewall.unblock_ip(IP)
    second = await firewall.unblock_ip(IP)

    assert (first.changed, first.verb, first.state) == (True, "unblock_ip", "unblocked")
    assert second.changed is False
    assert await firewall.list_blocked() == []


async def test_ipv6_is_blocked_in_canonical_form(firewall: FortiGateFirewall) -> None:
    """Given an upper-case IPv6 address, When blocked, Then the canonical form is banned."""
    receipt = await firewall.block_ip("2001:DB8:0::7", ttl_seconds=60, reason="r")

    assert receipt.target == "2001:db8::7"
    assert [b.ip for b in await firewall.list_blocked()] == ["2001:db8::7"]


@pytest.mark.parametrize(
    "bad", ["", "198.51.100.300", "198.51.100.0/24", "evil.example", " 1.2.3.4"]
)
async def test_invalid_ip_is_rejected_before_any_request(
    firewall: FortiGateFirewall, sim: FortiGateSimulator, bad: str
) -> None:
    """Given something that is not one IP address, When blocked or unblocked, Then
    RejectedError is raised and the firewall received nothing."""
    with pytest.raises(RejectedError):
        await firewall.block_ip(bad, ttl_seconds=60, reason="r")
    with pytest.raises(RejectedError):
        await firewall.unblock_ip(bad)

    assert sim.requests == []


async def test_negative_ttl_is_rejected_before_any_request(
    firewall: FortiGateFirewall, sim: FortiGateSimulator
) -> None:
    """Given a negative TTL, When blocking, Then RejectedError and no request."""
    with pytest.raises(RejectedError):
        await firewall.block_ip(IP, ttl_seconds=-1, reason="r")
    assert sim.requests == []


async def test_bad_token_is_an_auth_error(sim: FortiGateSimulator) -> None:
    """Given a wrong token, When listing, Then AuthError with HTTP 401 (§2: bad token)."""
    async with connect(settings(api_token="wrong"), transport=sim.transport()) as http:
        with pytest.raises(AuthError) as caught:
            await FortiGateFirewall(http).list_blocked()

    assert caught.value.status_code == 401


async def test_auth_lockout_429_is_a_permanent_auth_error(sim: FortiGateSimulator) -> None:
    """Given repeated bad tokens, When the lockout starts, Then 429 maps to AuthError, never
    a transient error, and even the right token is refused during the lockout (§1, §2)."""
    async with connect(settings(api_token="wrong"), transport=sim.transport()) as bad:
        for _ in range(sim.lockout_threshold):
            with pytest.raises(AuthError):
                await FortiGateFirewall(bad).list_blocked()
        with pytest.raises(AuthError) as caught:
            await FortiGateFirewall(bad).list_blocked()
    assert caught.value.status_code == 429
    assert not isinstance(caught.value, TransientError)

    async with connect(settings(), transport=sim.transport()) as good:
        with pytest.raises(AuthError) as again:
            await FortiGateFirewall(good).block_ip(IP, ttl_seconds=60, reason="r")
    assert again.value.status_code == 429


async def test_lockout_ends_after_its_duration(sim: FortiGateSimulator, clock: Clock) -> None:
    """Given a locked-out source, When the lockout period passes, Then the right token works."""
    async with connect(settings(api_token="wrong"), transport=sim.transport()) as bad:
        for _ in range(sim.lockout_threshold):
            with pytest.raises(AuthError):
                await FortiGateFirewall(bad).list_blocked()

    clock.advance(sim.lockout_seconds + 1)

    async with connect(settings(), transport=sim.transport()) as good:
        assert await FortiGateFirewall(good).list_blocked() == []


async def test_injected_429_with_retry_after_is_still_auth(
    firewall: FortiGateFirewall, sim: FortiGateSimulator
) -> None:
    """Given a 429 carrying Retry-After, When blocking, Then AuthError, not RateLimited."""
    sim.fail_next(status=429, headers={"Retry-After": "1"})

    with pytest.raises(AuthError) as caught:
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert not isinstance(caught.value, TransientError)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_injected_5xx_is_vendor_unavailable(
    firewall: FortiGateFirewall, sim: FortiGateSimulator, status: int
) -> None:
    """Given a 5xx from the firewall, When blocking, Then VendorUnavailable (transient)."""
    sim.fail_next(status=status)

    with pytest.raises(VendorUnavailable) as caught:
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert caught.value.status_code == status


async def test_failed_add_users_leaves_nothing_banned_and_retry_succeeds(
    firewall: FortiGateFirewall, sim: FortiGateSimulator
) -> None:
    """Given add_users fails once with 503, When the block is retried, Then it succeeds."""
    sim.fail_next(status=503, path_prefix="/api/v2/monitor/user/banned/add_users")
    with pytest.raises(VendorUnavailable):
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert await firewall.list_blocked() == []

    receipt = await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert receipt.changed is True


async def test_hang_with_short_timeout_is_vendor_timeout(sim: FortiGateSimulator) -> None:
    """Given a firewall that does not answer, When the client timeout passes, Then
    VendorTimeout."""
    sim.hang_next(seconds=5)
    async with connect(settings(timeout_seconds=0.2), transport=sim.transport()) as http:
        with pytest.raises(VendorTimeout):
            await FortiGateFirewall(http).list_blocked()


async def test_vdom_from_settings_reaches_the_firewall(sim: FortiGateSimulator) -> None:
    """Given settings naming VDOM 'dmz', When the plugin-style adapter (client only) blocks,
    Then the ban lands in 'dmz' and not in 'root' (§1: vdom query parameter)."""
    async with connect(settings(vdom="dmz"), transport=sim.transport()) as http:
        await FortiGateFirewall(http).block_ip(IP, ttl_seconds=60, reason="r")
        assert [b.ip for b in await FortiGateFirewall(http).list_blocked()] == [IP]
        assert await FortiGateFirewall(http, vdom="root").list_blocked() == []


@pytest.mark.parametrize("reban", ["refused", "replaced", "kept"])
@pytest.mark.parametrize("clear_unbanned", ["refused", "ignored"])
async def test_block_and_unblock_twice_under_every_reading(
    clock: Clock,
    reban: Literal["refused", "replaced", "kept"],
    clear_unbanned: Literal["refused", "ignored"],
) -> None:
    """Given a FortiGate whose answer to re-banning a banned address, and to clearing an
    address that is not banned, is any of the readings the swagger leaves open,
    When an address is blocked twice and unblocked twice,
    Then the adapter never sends the doubtful request (it checks first): the first block
    and unblock change the table, the second ones report changed=False, and the table
    ends empty."""
    sim = FortiGateSimulator(clock=clock, reban=reban, clear_unbanned=clear_unbanned)
    async with connect(settings(), transport=sim.transport()) as http:
        fw = FortiGateFirewall(http)
        first = await fw.block_ip("198.51.100.7", ttl_seconds=600, reason="r")
        second = await fw.block_ip("198.51.100.7", ttl_seconds=600, reason="r")
        assert set(sim.table()) == {"198.51.100.7"}
        lifted = await fw.unblock_ip("198.51.100.7")
        again = await fw.unblock_ip("198.51.100.7")
    assert (first.changed, second.changed, lifted.changed, again.changed) == (
        True,
        False,
        True,
        False,
    )
    assert sim.table() == {}
    assert [r.status for r in sim.requests if r.path.endswith(("add_users", "clear_users"))] == [
        200,
        200,
    ]


async def test_the_strict_simulator_refuses_a_re_ban_and_a_clear_of_nothing(
    sim: FortiGateSimulator, client: httpx.AsyncClient
) -> None:
    """Given the simulator's defaults (the strictest readings), When an address is banned
    twice and a never-banned one cleared, Then the second ban and the clear answer 424."""
    body = {"ip_addresses": ["198.51.100.8"], "expiry": 60}
    assert (
        await client.post("/api/v2/monitor/user/banned/add_users", json=body)
    ).status_code == 200
    again = await client.post("/api/v2/monitor/user/banned/add_users", json=body)
    nothing = await client.post(
        "/api/v2/monitor/user/banned/clear_users", json={"ip_addresses": ["192.0.2.9"]}
    )
    assert (again.status_code, nothing.status_code) == (424, 424)
