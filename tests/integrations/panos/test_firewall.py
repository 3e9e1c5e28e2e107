"""PanosFirewall against the simulator, in process: the Firewall contract end to end."""

from __future__ import annotations

import pytest

from integrations.capabilities import Firewall
from integrations.errors import AuthError, RejectedError, VendorTimeout, VendorUnavailable
from integrations.panos import PanosFirewall, PanosSimulator, connect

from .conftest import Clock, key_settings, login_settings

IP = "203.0.113.7"
TAG = "stanch-block"


def test_adapter_implements_the_firewall_protocol(firewall: PanosFirewall) -> None:
    """Given the adapter, When checked against the Firewall protocol, Then it conforms."""
    assert isinstance(firewall, Firewall)
    assert firewall.vendor == "panos"


async def test_block_then_block_again_is_unchanged(firewall: PanosFirewall) -> None:
    """Given an untagged IP, When blocked twice, Then the second call hits "already exists,
    ignore" and reports changed=False (reference §4 idempotency rule)."""
    first = await firewall.block_ip(IP, ttl_seconds=3600, reason="case 123")
    second = await firewall.block_ip(IP, ttl_seconds=3600, reason="case 123")

    assert (first.changed, first.verb, first.target, first.state) == (
        True,
        "block_ip",
        IP,
        "blocked",
    )
    assert first.detail["tag"] == TAG
    assert second.changed is False


async def test_list_shows_the_tagged_ip(firewall: PanosFirewall) -> None:
    """Given a blocked IP, When listed, Then it appears once; the documented read-back
    carries no remaining timeout, so expires_at is unknown (None)."""
    await firewall.block_ip(IP, ttl_seconds=600, reason="r")

    blocked = await firewall.list_blocked()

    assert [(b.ip, b.vendor, b.expires_at) for b in blocked] == [(IP, "panos", None)]


async def test_registration_expires_after_its_timeout(
    firewall: PanosFirewall, clock: Clock
) -> None:
    """Given a 60 s registration, When 61 s pass, Then the IP is gone and can be re-blocked."""
    await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    clock.advance(59)
    assert [b.ip for b in await firewall.list_blocked()] == [IP]

    clock.advance(2)

    assert await firewall.list_blocked() == []
    assert (await firewall.block_ip(IP, ttl_seconds=60, reason="r")).changed is True


@pytest.mark.parametrize("ttl", [None, 0])
async def test_no_ttl_registers_without_timeout(
    firewall: PanosFirewall, clock: Clock, ttl: int | None
) -> None:
    """Given no TTL, When blocked, Then the registration outlives the 30-day maximum."""
    await firewall.block_ip(IP, ttl_seconds=ttl, reason="r")
    clock.advance(31 * 24 * 3600)

    assert [b.ip for b in await firewall.list_blocked()] == [IP]


async def test_unblock_then_unblock_again_is_unchanged(firewall: PanosFirewall) -> None:
    """Given a tagged IP, When unblocked twice, Then the second call hits "does not exist,
    ignore unreg" and reports changed=False."""
    await firewall.block_ip(IP, ttl_seconds=None, reason="r")

    first = await firewall.unblock_ip(IP)
    second = await firewall.unblock_ip(IP)

    assert (first.changed, first.verb, first.state) == (True, "unblock_ip", "unblocked")
    assert second.changed is False
    assert await firewall.list_blocked() == []


async def test_other_tags_are_not_listed_or_removed(
    firewall: PanosFirewall, sim: PanosSimulator
) -> None:
    """Given an IP also tagged by someone else, When unblocked, Then only our tag goes."""
    async with connect(key_settings(tag="other-team"), transport=sim.transport()) as http:
        other = PanosFirewall(http)
        await other.block_ip(IP, ttl_seconds=None, reason="theirs")
        await firewall.block_ip("198.51.100.9", ttl_seconds=None, reason="ours")
        await firewall.block_ip(IP, ttl_seconds=None, reason="ours")

        assert (await firewall.unblock_ip(IP)).changed is True

        assert [b.ip for b in await firewall.list_blocked()] == ["198.51.100.9"]
        assert [b.ip for b in await other.list_blocked()] == [IP]


async def test_list_pages_through_more_than_500(
    firewall: PanosFirewall, sim: PanosSimulator
) -> None:
    """Given 1,001 tagged IPs, When listed, Then all come back, read in pages of 500
    (reference §4: advance start-point until fewer than limit return)."""
    ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(1001)]
    for ip in ips:
        sim.registered[ip] = {TAG: None}

    blocked = await firewall.list_blocked()

    assert sorted(b.ip for b in blocked) == sorted(ips)
    assert sim.request_types.count("op") == 3


@pytest.mark.parametrize(
    "bad", ["", "203.0.113.300", "203.0.113.0/24", "evil.example", "203.0.113.7 "]
)
async def test_invalid_ip_is_rejected_before_any_request(
    firewall: PanosFirewall, sim: PanosSimulator, bad: str
) -> None:
    """Given something that is not one IP, When blocked or unblocked, Then RejectedError
    and the firewall received nothing."""
    with pytest.raises(RejectedError):
        await firewall.block_ip(bad, ttl_seconds=60, reason="r")
    with pytest.raises(RejectedError):
        await firewall.unblock_ip(bad)
    assert sim.requests == []


@pytest.mark.parametrize("ttl", [-1, 2_592_001])
async def test_ttl_outside_documented_range_is_rejected_before_any_request(
    firewall: PanosFirewall, sim: PanosSimulator, ttl: int
) -> None:
    """Given a TTL below 0 or above 2,592,000 s (§4 maximum), When blocking, Then
    RejectedError and no request."""
    with pytest.raises(RejectedError):
        await firewall.block_ip(IP, ttl_seconds=ttl, reason="r")
    assert sim.requests == []


async def test_maximum_ttl_is_accepted(firewall: PanosFirewall) -> None:
    """Given exactly 2,592,000 s, When blocking, Then it is registered."""
    assert (await firewall.block_ip(IP, ttl_seconds=2_592_000, reason="r")).changed is True


@pytest.mark.parametrize("http_status", [403, 200])
async def test_bad_key_is_an_auth_error(clock: Clock, http_status: int) -> None:
    """Given a wrong API key and a firewall saying "Invalid Credential" (code 403) with
    HTTP 403 or inside HTTP 200 (undocumented which),
    When blocking,
    Then AuthError with the device's code and words under both readings."""
    sim = PanosSimulator(clock=clock, credential_refusal_status=http_status)
    async with connect(key_settings(api_key="wrong"), transport=sim.transport()) as http:
        with pytest.raises(AuthError) as caught:
            await PanosFirewall(http).block_ip(IP, ttl_seconds=60, reason="r")
    assert (caught.value.status_code, caught.value.vendor_code) == (http_status, "403")
    assert "Invalid Credential" in str(caught.value)


@pytest.mark.parametrize("http_status", [403, 200])
async def test_bad_credentials_fail_at_keygen(clock: Clock, http_status: int) -> None:
    """Given a wrong password, When the first call needs a key, Then AuthError (§3) that
    keeps the device's own words ("Invalid Credential", not "keygen failed") under both
    readings of the refusal's HTTP status, and no user-id request was sent."""
    sim = PanosSimulator(clock=clock, credential_refusal_status=http_status)
    async with connect(login_settings(password="nope"), transport=sim.transport()) as http:
        with pytest.raises(AuthError) as caught:
            await PanosFirewall(http).block_ip(IP, ttl_seconds=60, reason="r")
    assert "Invalid Credential" in str(caught.value)
    assert caught.value.vendor_code == "403"
    assert sim.request_types == ["keygen"]


async def test_keygen_once_then_cached(sim: PanosSimulator) -> None:
    """Given credentials, When several calls are made, Then one keygen serves them all."""
    async with connect(login_settings(), transport=sim.transport()) as http:
        fw = PanosFirewall(http)
        await fw.block_ip(IP, ttl_seconds=60, reason="r")
        await fw.list_blocked()
        await fw.unblock_ip(IP)
    assert sim.request_types == ["keygen", "user-id", "op", "user-id"]


async def test_rejected_key_is_regenerated_once_with_credentials(sim: PanosSimulator) -> None:
    """Given a cached key the device has since invalidated, When the next call is refused
    with 403, Then the client generates a new key and the call succeeds."""
    async with connect(login_settings(), transport=sim.transport()) as http:
        fw = PanosFirewall(http)
        await fw.list_blocked()
        sim.rotate_key()

        receipt = await fw.block_ip(IP, ttl_seconds=60, reason="r")

    assert receipt.changed is True
    assert sim.request_types == ["keygen", "op", "user-id", "keygen", "user-id"]


async def test_rejected_fixed_key_is_not_retried(sim: PanosSimulator) -> None:
    """Given a fixed key that has been invalidated, When blocking, Then AuthError after a
    single request (no credentials to regenerate with)."""
    sim.rotate_key()
    async with connect(key_settings(), transport=sim.transport()) as http:
        with pytest.raises(AuthError):
            await PanosFirewall(http).block_ip(IP, ttl_seconds=60, reason="r")
    assert sim.request_types == ["user-id"]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_injected_5xx_is_vendor_unavailable(
    firewall: PanosFirewall, sim: PanosSimulator, status: int
) -> None:
    """Given a 5xx, When blocking, Then VendorUnavailable and nothing was registered."""
    sim.fail_next(status=status)

    with pytest.raises(VendorUnavailable):
        await firewall.block_ip(IP, ttl_seconds=60, reason="r")
    assert await firewall.list_blocked() == []


async def test_hang_with_short_timeout_is_vendor_timeout(sim: PanosSimulator) -> None:
    """Given a firewall that does not answer, When the client timeout passes, Then
    VendorTimeout."""
    sim.hang_next(seconds=5)
    async with connect(key_settings(timeout_seconds=0.2), transport=sim.transport()) as http:
        with pytest.raises(VendorTimeout):
            await PanosFirewall(http).block_ip(IP, ttl_seconds=60, reason="r")


async def test_keygen_hang_is_vendor_timeout(sim: PanosSimulator) -> None:
    """Given keygen itself hangs, When the first call needs a key, Then VendorTimeout."""
    sim.hang_next(seconds=5)
    async with connect(login_settings(timeout_seconds=0.2), transport=sim.transport()) as http:
        with pytest.raises(VendorTimeout):
            await PanosFirewall(http).list_blocked()
