"""Simulator routes and adapter requests are CrowdStrike's documented operations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.routing import Route

from integrations.crowdstrike import (
    PLUGIN,
    CrowdStrikeAlerts,
    CrowdStrikeEDR,
    CrowdStrikeSimulator,
    connect,
    lab_settings,
)
from integrations.hunting import Indicator
from tests.integrations.documented import operations, undocumented

from .conftest import SPECS, FakeClock, sample

SPEC_FILES = ("crowdstrike.operations.json", "crowdstrike.all-operations.json")
HASH = "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c"


def all_operations() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(
        (SPECS / "crowdstrike.all-operations.json").read_text()
    )
    return entries


def entry_for(method: str, path: str) -> dict[str, Any]:
    (found,) = [e for e in all_operations() if (e["method"], e["path"]) == (method, path)]
    return found


class Recording(httpx.AsyncBaseTransport):
    """Keeps every request URL the adapter sends (query strings included)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.inner.handle_async_request(request)


def served(sim: CrowdStrikeSimulator) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for route in sim.routes():
        assert isinstance(route, Route) and route.methods is not None
        pairs.extend((method, route.path) for method in sorted(route.methods))
    return pairs


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's Starlette routes, when each (method, path) is checked, then
    all are documented operations and none is a bare HEAD."""
    pairs = served(CrowdStrikeSimulator())
    assert len(pairs) >= 12
    assert undocumented(pairs, operations(*SPEC_FILES)) == []
    assert all(method != "HEAD" for method, _ in pairs)


def test_simulator_covers_every_soar_role_the_adapters_use() -> None:
    """Given the curated categories, when compared with the routes, then each role the
    adapters need (auth, lookup, contain, release, IOC, alerts) is served."""
    routes = set(served(CrowdStrikeSimulator()))
    curated = json.loads((SPECS / "crowdstrike.operations.json").read_text())
    needed = {
        "auth",
        "host_lookup",
        "contain",
        "release",
        "ioc_create",
        "ioc_delete",
        "ioc_lookup",
        "alerts_list",
        "alerts_get",
    }
    covered = {e["category"] for e in curated if (e["method"], e["path"]) in routes}
    assert needed <= covered


async def test_full_scenario_sends_only_documented_requests() -> None:
    """Given a scenario exercising every adapter verb, when the requests are checked, then
    each (method, path) is documented, uses only documented query keys, and got a status
    the vendor documents for it."""
    clock = FakeClock()
    sim = CrowdStrikeSimulator(settle_seconds=0.5, clock=clock)
    aid = sim.add_host("WS-0042")
    for alert in sample("alerts_v2_entities_response.json")["resources"]:
        sim.add_alert(alert)
    recording = Recording(sim.transport())
    async with connect(lab_settings(), recording) as http:
        edr, alerts = CrowdStrikeEDR(http), CrowdStrikeAlerts(http, page_size=1)
        assert await edr.find_host("ws-0042") is not None
        assert await edr.find_host("absent") is None
        await edr.contain_host(aid, reason="scenario")
        await edr.contain_host(aid, reason="scenario")
        clock.advance(1)
        await edr.release_host(aid, reason="scenario")
        await edr.block_hash(HASH, reason="scenario")
        await edr.block_hash(HASH, reason="scenario")
        await edr.unblock_hash(HASH)
        await edr.unblock_hash(HASH)
        sim.add_sighting(aid, "sha256", HASH, at=datetime.now(UTC))
        hunted = await edr.hunt(
            Indicator.of("sha256", HASH), since=datetime(2026, 1, 1, tzinfo=UTC)
        )
        assert hunted.host_ids == [aid]
        assert len(await alerts.fetch_alerts(datetime(2026, 1, 1, tzinfo=UTC))) == 2

    logged = [(r.method, r.path) for r in sim.requests]
    assert undocumented(logged, operations(*SPEC_FILES)) == []
    assert {path for _, path in logged} >= {
        "/oauth2/token",
        "/devices/queries/devices/v1",
        "/devices/entities/devices/v2",
        "/devices/entities/devices-actions/v2",
        "/iocs/entities/indicators/v1",
        "/iocs/queries/indicators/v1",
        "/alerts/queries/alerts/v2",
        "/alerts/entities/alerts/v2",
        "/indicators/queries/devices/v1",
    }
    for record in sim.requests:
        entry = entry_for(record.method, record.path)
        assert record.status in entry["documented_status"], (record, entry["documented_status"])
    for request in recording.sent:
        entry = entry_for(request.method, request.url.path)
        assert set(request.url.params) <= set(entry["query"]), (request.url, entry["query"])
        assert set(entry.get("query_required", [])) <= set(request.url.params)


def test_plugin_wires_crowdstrike_pieces() -> None:
    """Given the package's PLUGIN, when inspected, then it names the vendor, its settings,
    adapters for EDR and alerts, and a simulator whose lab credentials the settings use."""
    assert PLUGIN.name == "crowdstrike"
    assert {c.value for c in PLUGIN.adapters} == {"edr", "alerts"}
    lab = PLUGIN.lab_settings()
    assert isinstance(lab, PLUGIN.settings)
    simulator = PLUGIN.simulator()
    assert isinstance(simulator, CrowdStrikeSimulator)
    assert lab.model_dump()["client_id"] == CrowdStrikeSimulator.LAB_CLIENT_ID


async def test_plugin_lab_settings_authenticate_against_simulator() -> None:
    """Given the plugin's lab settings and simulator, when connected and used, then the
    token is issued and the EDR adapter answers."""
    sim = PLUGIN.simulator()
    assert isinstance(sim, CrowdStrikeSimulator)
    aid = sim.add_host("LAB-01")
    async with PLUGIN.connect(PLUGIN.lab_settings(), sim.transport()) as http:
        edr = PLUGIN.adapters[next(c for c in PLUGIN.adapters if c.value == "edr")](http)
        host = await edr.get_host(aid)
    assert host.hostname == "LAB-01"
    assert [r.status for r in sim.requests] == [201, 200]
