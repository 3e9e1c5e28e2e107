"""VirusTotal v3: documented routes and requests, verdicts from engine stats, errors, quota."""

from __future__ import annotations

import httpx
import pytest
import respx
from pydantic import SecretStr
from starlette.routing import Route

from integrations.capabilities import IndicatorKind, IntelVerdict
from integrations.errors import AuthError, RateLimited, RejectedError
from integrations.virustotal import (
    DEMO_C2_IP,
    DEMO_RANSOMWARE_SHA256,
    QUOTA_EXCEEDED,
    VirusTotalIntel,
    VirusTotalSettings,
    VirusTotalSimulator,
    connect,
    lab_settings,
)
from tests.integrations.documented import operations, undocumented

OPS = operations("virustotal.operations.json")
CLEAN_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class Clock:
    """A settable epoch clock for the simulator's quota day."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When matched against the spec, Then all three are."""
    served = [
        (method, route.path)
        for route in VirusTotalSimulator().routes()
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert len(served) == 3
    assert undocumented(served, OPS) == []


async def test_demo_hash_and_c2_are_malicious_and_every_request_documented() -> None:
    """Given the lab simulator, When the demo's hash, C2 address, an unknown domain are
    looked up, Then hash and address are malicious with names and first-seen, the domain
    unknown (404), and every request was documented and carried the key."""
    sim = VirusTotalSimulator()
    async with connect(lab_settings(), transport=sim.transport()) as http:
        vt = VirusTotalIntel(http)
        file = await vt.lookup(DEMO_RANSOMWARE_SHA256.upper())
        ip = await vt.lookup(DEMO_C2_IP)
        domain = await vt.lookup("never-seen.example")

    assert file.verdict == IntelVerdict.MALICIOUS and file.kind == IndicatorKind.SHA256
    assert file.indicator == DEMO_RANSOMWARE_SHA256
    assert "lockbit" in file.names and "ransomware" in file.names
    assert file.first_seen is not None and file.first_seen.year == 2023
    assert file.link == f"https://www.virustotal.com/gui/file/{DEMO_RANSOMWARE_SHA256}"
    assert file.score is not None and file.score > 50
    assert ip.verdict == IntelVerdict.MALICIOUS and ip.kind == IndicatorKind.IPV4
    assert domain.verdict == IntelVerdict.UNKNOWN and domain.note
    assert [r.status for r in sim.requests] == [200, 200, 404]
    assert undocumented([(r.method, r.path) for r in sim.requests], OPS) == []


@pytest.mark.parametrize(
    ("malicious", "suspicious", "harmless", "expected"),
    [
        (3, 0, 0, IntelVerdict.MALICIOUS),
        (2, 0, 0, IntelVerdict.SUSPICIOUS),
        (0, 1, 0, IntelVerdict.SUSPICIOUS),
        (0, 0, 60, IntelVerdict.HARMLESS),
    ],
)
async def test_verdict_follows_last_analysis_stats(
    malicious: int, suspicious: int, harmless: int, expected: IntelVerdict
) -> None:
    """Given a file with these engine counts, When looked up, Then the verdict is folded so."""
    sim = VirusTotalSimulator(seed_lab=False)
    sim.add_file(CLEAN_SHA256, malicious=malicious, suspicious=suspicious, harmless=harmless)
    async with connect(lab_settings(), transport=sim.transport()) as http:
        report = await VirusTotalIntel(http).lookup(CLEAN_SHA256)
    assert report.verdict == expected


async def test_md5_and_sha1_find_the_same_file() -> None:
    """Given a file known by all three digests, When looked up by MD5 and SHA-1, Then both
    are answered from the same record, classified by length."""
    sim = VirusTotalSimulator(seed_lab=False)
    sim.add_file(CLEAN_SHA256, malicious=9, md5="a" * 32, sha1="b" * 40)
    async with connect(lab_settings(), transport=sim.transport()) as http:
        vt = VirusTotalIntel(http)
        by_md5, by_sha1 = await vt.lookup("a" * 32), await vt.lookup("b" * 40)
    assert (by_md5.kind, by_sha1.kind) == (IndicatorKind.MD5, IndicatorKind.SHA1)
    assert by_md5.verdict == by_sha1.verdict == IntelVerdict.MALICIOUS


async def test_daily_quota_answers_429_quota_exceeded_until_midnight_utc() -> None:
    """Given a daily quota of 2, When a third lookup is made the same UTC day, Then it is
    RateLimited with QuotaExceededError and no retry time (none is documented); after
    00:00 UTC the quota is fresh."""
    clock = Clock(1_764_800_000.0)  # 2025-12-03 22:13 UTC
    sim = VirusTotalSimulator(daily_quota=2, clock=clock)
    async with connect(lab_settings(), transport=sim.transport()) as http:
        vt = VirusTotalIntel(http)
        await vt.lookup(DEMO_C2_IP)
        await vt.lookup(DEMO_C2_IP)
        with pytest.raises(RateLimited) as caught:
            await vt.lookup(DEMO_C2_IP)
        clock.now += 2 * 3600
        after_midnight = await vt.lookup(DEMO_C2_IP)
    assert caught.value.vendor_code == QUOTA_EXCEEDED
    assert caught.value.retry_after is None
    assert after_midnight.verdict == IntelVerdict.MALICIOUS
    assert [r.status for r in sim.requests] == [200, 200, 429, 200]


async def test_lab_fault_429_is_a_quota_exceeded_error() -> None:
    """Given `stanch lab --faults virustotal:429:1` (throttle_next), When looked up, Then
    the 429 carries VirusTotal's QuotaExceededError envelope."""
    sim = VirusTotalSimulator()
    sim.throttle_next(1)
    async with connect(lab_settings(), transport=sim.transport()) as http:
        with pytest.raises(RateLimited) as caught:
            await VirusTotalIntel(http).lookup(DEMO_C2_IP)
    assert caught.value.vendor_code == QUOTA_EXCEEDED


async def test_a_wrong_key_is_an_auth_error() -> None:
    """Given a key the simulator does not know, When looked up, Then AuthError (401)."""
    sim = VirusTotalSimulator()
    settings = VirusTotalSettings(base_url=sim.base_url, api_key=SecretStr("wrong"))
    async with connect(settings, transport=sim.transport()) as http:
        with pytest.raises(AuthError) as caught:
            await VirusTotalIntel(http).lookup(DEMO_C2_IP)
    assert caught.value.vendor_code == "WrongCredentialsError"


@pytest.mark.parametrize("bad", ["", "not an indicator", "xyz123", "10.0.0.1/24"])
async def test_a_non_indicator_is_rejected_before_any_request(bad: str) -> None:
    """Given text that is no hash, address or domain, When looked up, Then RejectedError
    and the simulator saw nothing."""
    sim = VirusTotalSimulator()
    async with connect(lab_settings(), transport=sim.transport()) as http:
        with pytest.raises(RejectedError):
            await VirusTotalIntel(http).lookup(bad)
    assert sim.requests == []


async def test_every_adapter_request_is_documented_against_a_mock() -> None:
    """Given a mock that answers anything with an empty object, When every kind is looked
    up, Then each request is a documented operation with the x-apikey header."""
    with respx.mock(base_url="https://vt.example.invalid", assert_all_called=False) as mock:
        mock.route().mock(return_value=httpx.Response(200, json={"data": {"attributes": {}}}))
        settings = VirusTotalSettings(base_url="https://vt.example.invalid", api_key=SecretStr("k"))
        async with connect(settings) as http:
            vt = VirusTotalIntel(http)
            for indicator in (CLEAN_SHA256, "a" * 32, "b" * 40, "2001:db8::1", "example.com"):
                await vt.lookup(indicator)
        sent = [(c.request.method, c.request.url.path) for c in mock.calls]
        assert all(c.request.headers["x-apikey"] == "k" for c in mock.calls)
    assert len(sent) == 5
    assert undocumented(sent, OPS) == []
