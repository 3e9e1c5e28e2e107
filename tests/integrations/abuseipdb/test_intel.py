"""AbuseIPDB v2: the documented check request, verdicts from the confidence score, 429."""

from __future__ import annotations

import time

import httpx
import pytest
import respx
from pydantic import SecretStr
from starlette.routing import Route

from integrations.abuseipdb import (
    DEMO_C2_IP,
    AbuseIPDBIntel,
    AbuseIPDBSettings,
    AbuseIPDBSimulator,
    connect,
    lab_settings,
)
from integrations.capabilities import IntelVerdict
from integrations.errors import AuthError, RateLimited, RejectedError
from tests.integrations.documented import operations, undocumented

OPS = operations("abuseipdb.operations.json")
DOCUMENTED_QUERY = {"ipAddress", "maxAgeInDays", "verbose"}


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When matched against the spec, Then the one is."""
    served = [
        (method, route.path)
        for route in AbuseIPDBSimulator().routes()
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert served == [("GET", "/api/v2/check")]
    assert undocumented(served, OPS) == []


async def test_demo_c2_is_malicious_an_unreported_address_unknown() -> None:
    """Given the lab simulator, When the demo's C2 and an unreported address are checked,
    Then the C2 is malicious (score 100) and the other unknown, and every request was
    documented with documented query keys and the rate-limit headers."""
    sim = AbuseIPDBSimulator()
    async with connect(lab_settings(), transport=sim.transport()) as http:
        abuse = AbuseIPDBIntel(http)
        c2 = await abuse.lookup(DEMO_C2_IP)
        quiet = await abuse.lookup("198.51.100.200")
    assert c2.verdict == IntelVerdict.MALICIOUS and c2.score == 100
    assert c2.link == f"https://www.abuseipdb.com/check/{DEMO_C2_IP}"
    assert quiet.verdict == IntelVerdict.UNKNOWN and quiet.score == 0
    assert undocumented([(r.method, r.path) for r in sim.requests], OPS) == []
    assert all(r.status == 200 for r in sim.requests)


@pytest.mark.parametrize(
    ("score", "reports", "whitelisted", "expected"),
    [
        (75, 10, False, IntelVerdict.MALICIOUS),
        (30, 3, False, IntelVerdict.SUSPICIOUS),
        (0, 2, False, IntelVerdict.HARMLESS),
        (90, 5, True, IntelVerdict.HARMLESS),
    ],
)
async def test_verdict_follows_the_confidence_score(
    score: int, reports: int, whitelisted: bool, expected: IntelVerdict
) -> None:
    """Given an address with this score and reports, When checked, Then the verdict."""
    sim = AbuseIPDBSimulator(seed_lab=False)
    sim.report("203.0.113.5", score=score, reports=reports, whitelisted=whitelisted)
    async with connect(lab_settings(), transport=sim.transport()) as http:
        assert (await AbuseIPDBIntel(http).lookup("203.0.113.5")).verdict == expected


async def test_the_daily_limit_is_429_with_retry_after_until_midnight() -> None:
    """Given a daily limit of 1, When a second check is made, Then RateLimited whose
    retry_after is the Retry-After seconds (up to midnight UTC), with the documented
    headers; the first answer said one remaining out of one."""
    sim = AbuseIPDBSimulator(daily_limit=1)
    async with connect(lab_settings(), transport=sim.transport()) as http:
        first = await http.get("/api/v2/check", params={"ipAddress": DEMO_C2_IP})
        with pytest.raises(RateLimited) as caught:
            await AbuseIPDBIntel(http).lookup(DEMO_C2_IP)
        refused = await http.get("/api/v2/check", params={"ipAddress": DEMO_C2_IP})
    assert first.headers["X-RateLimit-Remaining"] == "0"
    assert first.headers["X-RateLimit-Limit"] == "1"
    wait = caught.value.retry_after
    assert wait is not None and 0 < wait <= 86_400
    assert refused.status_code == 429
    assert int(refused.headers["X-RateLimit-Reset"]) > time.time()
    assert "Daily rate limit" in refused.json()["errors"][0]["detail"]


async def test_a_wrong_key_is_an_auth_error() -> None:
    """Given a wrong key, When checked, Then AuthError (401)."""
    sim = AbuseIPDBSimulator()
    settings = AbuseIPDBSettings(base_url=sim.base_url, api_key=SecretStr("wrong"))
    async with connect(settings, transport=sim.transport()) as http:
        with pytest.raises(AuthError):
            await AbuseIPDBIntel(http).lookup(DEMO_C2_IP)


async def test_an_out_of_range_max_age_is_the_documented_422() -> None:
    """Given maxAgeInDays 400 (the API takes 1-365), When checked, Then RejectedError."""
    sim = AbuseIPDBSimulator()
    settings = lab_settings().model_copy(update={"max_age_days": 400})
    async with connect(settings, transport=sim.transport()) as http:
        with pytest.raises(RejectedError) as caught:
            await AbuseIPDBIntel(http).lookup(DEMO_C2_IP)
    assert caught.value.status_code == 422
    assert "365" in str(caught.value)


@pytest.mark.parametrize("not_an_ip", ["example.com", "e" * 64, "nonsense"])
async def test_anything_but_an_address_is_rejected_before_any_request(not_an_ip: str) -> None:
    """Given a domain, a hash or nonsense, When checked, Then RejectedError, nothing sent."""
    sim = AbuseIPDBSimulator()
    async with connect(lab_settings(), transport=sim.transport()) as http:
        with pytest.raises(RejectedError):
            await AbuseIPDBIntel(http).lookup(not_an_ip)
    assert sim.requests == []


async def test_every_adapter_request_is_documented_against_a_mock() -> None:
    """Given a mock answering any request, When v4 and v6 addresses are checked, Then each
    request is the documented check with documented query keys and the Key header."""
    with respx.mock(base_url="https://abuse.example.invalid", assert_all_called=False) as mock:
        mock.route().mock(return_value=httpx.Response(200, json={"data": {}}))
        settings = AbuseIPDBSettings(
            base_url="https://abuse.example.invalid", api_key=SecretStr("k")
        )
        async with connect(settings) as http:
            abuse = AbuseIPDBIntel(http)
            await abuse.lookup("203.0.113.5")
            await abuse.lookup("2001:db8::5")
        calls = list(mock.calls)
    assert len(calls) == 2
    assert undocumented([(c.request.method, c.request.url.path) for c in calls], OPS) == []
    for call in calls:
        assert set(call.request.url.params) <= DOCUMENTED_QUERY
        assert call.request.headers["Key"] == "k"
    assert calls[1].request.url.params["ipAddress"] == "2001:db8::5"
