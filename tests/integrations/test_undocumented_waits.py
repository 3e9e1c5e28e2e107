"""Vendors that document no retry header: a 429 is read under both readings of that silence.

SentinelOne and PAN-OS document no rate-limit header ([U]). If one is sent it is read
(``Retry-After`` seconds); if not, ``retry_after`` is ``None`` and the flow layer backs
off exponentially instead (``flows.tasks.rate_limit_wait``).
"""

from __future__ import annotations

import pytest

from integrations.errors import RateLimited
from integrations.panos import PanosFirewall, PanosSimulator
from integrations.panos import connect as panos_connect
from integrations.sentinelone import SentinelOneEDR, SentinelOneSimulator
from integrations.sentinelone import connect as s1_connect
from integrations.sentinelone import lab_settings as s1_lab_settings
from tests.integrations.panos.conftest import key_settings


@pytest.mark.parametrize("header", [None, "2"])
async def test_sentinelone_429_with_and_without_a_retry_header(header: str | None) -> None:
    """Given a SentinelOne 429 with no header (the documented silence) or a Retry-After,
    When the adapter looks a host up, Then RateLimited carries None or the 2 s."""
    sim = SentinelOneSimulator()
    if header is None:
        sim.throttle_next(1)
    else:
        sim.fail_next(1, status=429, headers={"Retry-After": header})
    async with s1_connect(s1_lab_settings(), transport=sim.transport()) as http:
        with pytest.raises(RateLimited) as caught:
            await SentinelOneEDR(http).find_host("WS-0042")
    assert caught.value.retry_after == (None if header is None else 2.0)


@pytest.mark.parametrize("header", [None, "2"])
async def test_panos_429_with_and_without_a_retry_header(header: str | None) -> None:
    """Given a PAN-OS 429 with no header (the documented silence) or a Retry-After,
    When the adapter blocks an address, Then RateLimited carries None or the 2 s."""
    sim = PanosSimulator()
    if header is None:
        sim.throttle_next(1)
    else:
        sim.fail_next(1, status=429, headers={"Retry-After": header})
    async with panos_connect(key_settings(), transport=sim.transport()) as http:
        with pytest.raises(RateLimited) as caught:
            await PanosFirewall(http).block_ip("203.0.113.7", ttl_seconds=60, reason="r")
    assert caught.value.retry_after == (None if header is None else 2.0)
