"""Every SentinelOne simulator route and every adapter request is a documented operation."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.routing import Route

from integrations.hunting import Indicator
from integrations.sentinelone import SentinelOneAlerts, SentinelOneEDR, SentinelOneSimulator
from tests.integrations.documented import operations, undocumented

OPS = operations("sentinelone.all-operations.json")
CURATED = operations("sentinelone.operations.json")


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When matched against the curated list, Then all match."""
    pairs = [
        (method, route.path)
        for route in SentinelOneSimulator().routes()
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    ]
    assert len(pairs) == 12
    assert undocumented(pairs, CURATED) == []
    assert undocumented(pairs, OPS) == []


async def test_every_adapter_request_is_documented(
    sim: SentinelOneSimulator, edr: SentinelOneEDR, alerts: SentinelOneAlerts
) -> None:
    """Given a run through every adapter verb, When the simulator's log is checked, Then every
    request matched a route and a documented (method, path)."""
    agent_id = sim.add_host("WS-01")
    sim.add_threat(
        {
            "threatInfo": {"sha1": "a" * 40, "createdAt": "2024-05-02T00:00:00Z"},
            "agentRealtimeInfo": {"agentId": agent_id},
        }
    )
    await edr.find_host("WS-01")
    await edr.contain_host(agent_id, reason="r")
    await edr.release_host(agent_id, reason="r")
    await edr.block_hash("a" * 40, reason="r")
    await edr.unblock_hash("a" * 40)
    await edr.quarantine_file(agent_id, "a" * 40, reason="r")
    await edr.kill_process(agent_id, "a" * 40, reason="r")
    sim.add_sighting(agent_id, "sha256", "b" * 64, at=datetime.now(UTC))
    await edr.hunt(Indicator.of("sha256", "b" * 64), since=datetime(2024, 5, 1, tzinfo=UTC))
    await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC))

    assert all(r.route is not None and r.status == 200 for r in sim.requests)
    assert undocumented([(r.method, r.path) for r in sim.requests], OPS) == []
    assert len({(r.method, r.route) for r in sim.requests}) == 11
