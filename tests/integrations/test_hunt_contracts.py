"""The EDR ``hunt`` contract, run against every EDR plugin and its own simulator.

A hunt answers the hosts on which an indicator was seen; the simulators hold what
their sensors saw (``add_sighting``) and answer through each vendor's documented
hunting API (DevicesRanOn, advanced hunting, Deep Visibility).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations.capabilities import Capability
from integrations.errors import RateLimited
from integrations.hunting import HuntResult, Indicator, IndicatorError, IndicatorKind
from integrations.plugin import VendorPlugin, load_plugin
from integrations.simkit import LAB_FLEET, LAB_RANSOMWARE_SHA256
from tests.integrations.test_capability_contracts import (
    assert_requests_clean,
    cases,
    make_settings,
    wired,
)

SHA256 = "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
C2 = "198.51.100.23"
DOMAIN = "evil-c2.example"
# Vendors whose hunting API reports per-host times (Falcon's DevicesRanOn does not).
TIMED = {"defender", "sentinelone"}


@pytest.fixture(autouse=True)
def _no_vendor_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("STANCH_"):
            monkeypatch.delenv(name)
    yield


def _seed(
    sim: Any, sightings: dict[str, list[tuple[IndicatorKind, str, datetime]]]
) -> dict[str, str]:
    ids = {}
    for hostname, seen in sightings.items():
        ids[hostname] = sim.add_host(hostname)
        for kind, value, at in seen:
            sim.add_sighting(ids[hostname], kind.value, value, at=at)
    return ids


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
@pytest.mark.parametrize(
    ("kind", "value"),
    [(IndicatorKind.SHA256, SHA256), (IndicatorKind.IPV4, C2), (IndicatorKind.DOMAIN, DOMAIN)],
)
async def test_hunt_finds_every_host_that_saw_the_indicator(
    plugin: VendorPlugin, kind: IndicatorKind, value: str
) -> None:
    """Given an indicator seen twice on one host, once on another, and never on a third
    When the EDR hunts it over the last day
    Then exactly the two hosts come back, named, with the vendor's first/last seen."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        now = datetime.now(UTC)
        early, late, other = (
            now - timedelta(hours=6),
            now - timedelta(hours=1),
            now - timedelta(hours=3),
        )
        ids = _seed(
            sim,
            {
                "hunt-a": [(kind, value, early), (kind, value, late)],
                "hunt-b": [(kind, value, other)],
                "hunt-clean": [(IndicatorKind.SHA256, "0" * 64, other)],
            },
        )
        result = await edr.hunt(Indicator.of(kind, value), since=now - timedelta(days=1))
        assert isinstance(result, HuntResult)
        assert result.complete and result.vendor == plugin.name
        found = {h.host_id: h for h in result.hosts}
        assert set(found) == {ids["hunt-a"], ids["hunt-b"]}
        assert {h.hostname.lower() for h in result.hosts} == {"hunt-a", "hunt-b"}
        if plugin.name in TIMED:
            a = found[ids["hunt-a"]]
            assert a.first_seen is not None and a.last_seen is not None
            assert abs((a.first_seen - early).total_seconds()) < 1
            assert abs((a.last_seen - late).total_seconds()) < 1
        else:
            assert result.note and "no time window" in result.note
        assert_requests_clean(sim)


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
async def test_hunt_of_an_unseen_indicator_finds_no_host(plugin: VendorPlugin) -> None:
    """Given a fleet that never saw a hash
    When the EDR hunts it
    Then the hunt is complete and empty."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        _seed(sim, {"hunt-a": [(IndicatorKind.SHA256, SHA256, datetime.now(UTC))]})
        unseen = Indicator.of("sha256", "a" * 64)
        result = await edr.hunt(unseen, since=datetime.now(UTC) - timedelta(days=7))
        assert result.complete and result.hosts == []


@pytest.mark.parametrize("plugin", cases(Capability.EDR, xfail={"crowdstrike": "no time window"}))
async def test_hunt_leaves_out_sightings_before_since(plugin: VendorPlugin) -> None:
    """Given a hash seen on one host ten days ago and on another an hour ago
    When the EDR hunts it over the last seven days
    Then only the recent host comes back (Falcon's DevicesRanOn has no window)."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        now = datetime.now(UTC)
        ids = _seed(
            sim,
            {
                "old": [(IndicatorKind.SHA256, SHA256, now - timedelta(days=10))],
                "new": [(IndicatorKind.SHA256, SHA256, now - timedelta(hours=1))],
            },
        )
        result = await edr.hunt(Indicator.of("sha256", SHA256), since=now - timedelta(days=7))
        assert result.host_ids == [ids["new"]]


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
async def test_hunt_throttled_is_rate_limited(plugin: VendorPlugin) -> None:
    """Given the vendor answers the hunt with its documented 429
    When the EDR hunts
    Then the adapter raises RateLimited (the flow layer retries transient errors)."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        sim.throttle_next(1, wait=2.0)
        with pytest.raises(RateLimited):
            await edr.hunt(Indicator.of("sha256", SHA256), since=datetime.now(UTC))


@pytest.mark.parametrize("plugin", cases(Capability.EDR))
async def test_lab_fleet_has_the_demo_hash_on_at_least_two_hosts(plugin: VendorPlugin) -> None:
    """Given a simulator seeded with the lab fleet
    When the EDR hunts the demo's ransomware hash over the last week
    Then at least two fleet hosts come back, WS-0042 among them."""
    async with wired(plugin, Capability.EDR) as (sim, edr):
        assert sim.seed_fleet() == list(LAB_FLEET)
        indicator = Indicator.of("sha256", LAB_RANSOMWARE_SHA256)
        result = await edr.hunt(indicator, since=datetime.now(UTC) - timedelta(days=7))
        names = {h.hostname.upper() for h in result.hosts}
        assert len(names) >= 2 and "WS-0042" in names
        assert names <= set(LAB_FLEET)


async def test_crowdstrike_hunt_pages_devices_ran_on_and_details() -> None:
    """Given a hash seen on 130 Falcon hosts (DevicesRanOn pages hold 100)
    When the EDR hunts it
    Then all 130 come back, from two DevicesRanOn pages and two detail batches."""
    async with wired(load_plugin("crowdstrike"), Capability.EDR) as (sim, edr):
        now = datetime.now(UTC)
        _seed(sim, {f"cs-{i:03d}": [(IndicatorKind.SHA256, SHA256, now)] for i in range(130)})
        result = await edr.hunt(Indicator.of("sha256", SHA256), since=now - timedelta(days=1))
        assert len(set(result.host_ids)) == 130
        routes = [r.route for r in sim.requests]
        assert routes.count("/indicators/queries/devices/v1") == 2
        assert routes.count("/devices/entities/devices/v2") == 2


async def test_sentinelone_hunt_follows_the_events_cursor() -> None:
    """Given 1,005 Deep Visibility events for a hash on two agents (pages hold 1,000)
    When the EDR hunts it
    Then both agents come back, read over two cursor pages."""
    async with wired(load_plugin("sentinelone"), Capability.EDR) as (sim, edr):
        now = datetime.now(UTC)
        seen = [(IndicatorKind.SHA256, SHA256, now - timedelta(minutes=i)) for i in range(1004)]
        ids = _seed(sim, {"s1-a": seen, "s1-b": [(IndicatorKind.SHA256, SHA256, now)]})
        result = await edr.hunt(Indicator.of("sha256", SHA256), since=now - timedelta(days=1))
        assert set(result.host_ids) == set(ids.values())
        assert [r.route for r in sim.requests].count("/web/api/v2.1/dv/events") == 2
        first = {h.host_id: h for h in result.hosts}[ids["s1-a"]].first_seen
        assert (
            first is not None and abs((first - (now - timedelta(minutes=1003))).total_seconds()) < 1
        )


async def test_sentinelone_query_that_never_finishes_is_cancelled_with_a_note() -> None:
    """Given a Deep Visibility query that stays RUNNING
    When the EDR hunts with a bounded wait of 0.3 s
    Then it returns within a few seconds, incomplete, says why, and cancels the query."""
    plugin = load_plugin("sentinelone")
    sim = plugin.simulator(query_seconds=None)
    settings = make_settings(plugin).model_copy(update={"hunt_timeout_seconds": 0.3})
    async with plugin.connect(settings, sim.transport()) as client:
        edr = plugin.adapters[Capability.EDR](client)
        started = time.monotonic()
        result = await edr.hunt(Indicator.of("sha256", SHA256), since=datetime.now(UTC))
        waited = time.monotonic() - started
    assert not result.complete and result.hosts == []
    assert result.note == "Deep Visibility query did not finish within 0.3 s"
    assert 0.3 <= waited < 5
    assert [r.route for r in sim.requests][-1] == "/web/api/v2.1/dv/cancel-query"
    assert all(q["state"] == "QUERY_CANCELLED" for q in sim.dv_queries.values())


async def test_defender_query_is_built_from_the_validated_indicator_only() -> None:
    """Given a Defender EDR and the simulator's request log
    When it hunts a domain
    Then one advanced-hunting query went out, over DeviceNetworkEvents, and the simulator
    (which refuses any other KQL shape) answered it 200."""
    async with wired(load_plugin("defender"), Capability.EDR) as (sim, edr):
        await edr.hunt(Indicator.of("domain", "Evil-C2.Example."), since=datetime.now(UTC))
        (request,) = [r for r in sim.requests if r.route == "/api/advancedqueries/run"]
        assert request.method == "POST" and request.status == 200


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("sha256", "abc"),
        ("sha256", SHA256 + '" or 1==1'),
        ("md5", "z" * 32),
        ("ipv4", "10.0.0.256"),
        ("ipv4", '1.2.3.4" | union DeviceEvents'),
        ("domain", 'evil.com" | take 1'),
        ("domain", "-bad.example"),
        ("domain", "localhost"),
        ("process", "cmd.exe"),
    ],
)
def test_indicators_are_validated_strictly(kind: str, bad: str) -> None:
    """Given a value that is not of its kind's strict form (or an unknown kind)
    When it is made an indicator
    Then IndicatorError says which form was expected."""
    with pytest.raises(IndicatorError) as info:
        Indicator.of(kind, bad)
    assert kind in str(info.value)


def test_indicator_kind_is_told_by_form() -> None:
    """Given bare text of each kind
    When it is parsed
    Then the kind is recognised and the value is canonical."""
    assert Indicator.parse(SHA256.upper()) == Indicator.of("sha256", SHA256)
    assert Indicator.parse("D41D8CD98F00B204E9800998ECF8427E").kind is IndicatorKind.MD5
    assert Indicator.parse(" 203.0.113.66 ").value == "203.0.113.66"
    assert Indicator.parse("Evil-C2.Example").value == "evil-c2.example"
    with pytest.raises(IndicatorError):
        Indicator.parse("not an indicator; drop table")
