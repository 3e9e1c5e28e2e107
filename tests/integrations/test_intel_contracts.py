"""The ThreatIntel contract, run against every vendor plugin that serves it.

Each case wires the vendor's adapter to its own simulator in-process, as the wiring does.
The contract: known-bad indicators are malicious with a link, an indicator the service
has no record of is ``unknown`` (never an error), every kind the adapter claims is
answered with that kind, a spent quota is :class:`RateLimited`, and text that is no
indicator is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from integrations.capabilities import (
    Capability,
    IndicatorKind,
    IntelReport,
    IntelVerdict,
    ThreatIntel,
)
from integrations.errors import PermanentError, RateLimited
from integrations.plugin import VendorPlugin, available_plugins
from integrations.simkit import Simulator

DEMO_C2_IP = "203.0.113.66"
SAMPLES = {
    IndicatorKind.SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    IndicatorKind.SHA1: "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    IndicatorKind.MD5: "098f6bcd4621d373cade4e832627b4f6",
    IndicatorKind.IPV4: "198.51.100.23",
    IndicatorKind.IPV6: "2001:db8::23",
    IndicatorKind.DOMAIN: "unseen.example",
}


def cases() -> list[Any]:
    return [
        pytest.param(p, id=p.name) for p in available_plugins() if Capability.INTEL in p.adapters
    ]


@asynccontextmanager
async def wired(plugin: VendorPlugin) -> AsyncIterator[tuple[Simulator, Any]]:
    sim = plugin.simulator()
    async with plugin.connect(plugin.lab_settings(), sim.transport()) as client:
        yield sim, plugin.adapters[Capability.INTEL](client)


def test_two_vendors_serve_threat_intel() -> None:
    """Given the plugins, When grouped, Then VirusTotal and AbuseIPDB both serve intel."""
    assert {p.values[0].name for p in cases()} == {"virustotal", "abuseipdb"}


@pytest.mark.parametrize("plugin", cases())
async def test_the_demo_c2_address_is_malicious_with_a_link(plugin: VendorPlugin) -> None:
    """Given the lab simulator, When the demo's C2 address is looked up, Then malicious,
    with a score, an https link for the analyst, and the vendor's name."""
    async with wired(plugin) as (sim, intel):
        assert isinstance(intel, ThreatIntel)
        report = await intel.lookup(DEMO_C2_IP)
    assert isinstance(report, IntelReport)
    assert report.verdict == IntelVerdict.MALICIOUS
    assert report.vendor == plugin.name
    assert report.score is not None and report.score > 0
    assert report.link is not None and report.link.startswith("https://")
    assert all(r.status == 200 for r in sim.requests)


@pytest.mark.parametrize("plugin", cases())
async def test_every_claimed_kind_is_answered_and_unseen_is_unknown(
    plugin: VendorPlugin,
) -> None:
    """Given an indicator of every kind the adapter claims, none of them known, When each
    is looked up, Then each answer is unknown, of that kind, canonical; no 5xx."""
    async with wired(plugin) as (sim, intel):
        assert intel.kinds, "an adapter claims at least one kind"
        for kind in intel.kinds:
            report = await intel.lookup(SAMPLES[kind])
            assert report.kind == kind
            assert report.indicator == SAMPLES[kind]
            assert report.verdict == IntelVerdict.UNKNOWN
    assert sim.requests and all(r.status < 500 for r in sim.requests)


@pytest.mark.parametrize("plugin", cases())
async def test_a_spent_quota_is_rate_limited(plugin: VendorPlugin) -> None:
    """Given the vendor's 429 (as `stanch lab --faults <vendor>:429:1` arms it), When
    looked up, Then RateLimited, which the flow turns into an unknown verdict."""
    async with wired(plugin) as (sim, intel):
        sim.throttle_next(1)
        with pytest.raises(RateLimited):
            await intel.lookup(DEMO_C2_IP)


@pytest.mark.parametrize("plugin", cases())
@pytest.mark.parametrize("bad", ["", "nonsense", "10.0.0.0/8", "http://x|y"])
async def test_a_non_indicator_is_refused_before_sending(plugin: VendorPlugin, bad: str) -> None:
    """Given text that is no indicator, When looked up, Then a PermanentError, no request."""
    async with wired(plugin) as (sim, intel):
        with pytest.raises(PermanentError):
            await intel.lookup(bad)
    assert sim.requests == []
