"""Every Defender simulator route and every adapter request is a documented operation."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.routing import Route

from integrations.defender import DefenderAlerts, DefenderEDR, DefenderSimulator
from integrations.hunting import Indicator
from tests.integrations.documented import operations, undocumented

OPS = operations("defender.operations.json")


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When matched against the documented list, Then all match."""
    pairs = [
        (method, route.path)
        for route in DefenderSimulator().routes()
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    ]
    assert len(pairs) == 16
    assert undocumented(pairs, OPS) == []


async def test_every_adapter_request_is_documented(
    sim: DefenderSimulator, edr: DefenderEDR, alerts: DefenderAlerts
) -> None:
    """Given a run through every adapter verb, When the simulator's log is checked, Then every
    request matched a route and a documented (method, path)."""
    machine_id = sim.add_host("ws-01")
    sim.add_alert({"id": "a1", "severity": "Low", "alertCreationTime": "2024-05-02T00:00:00Z"})
    await edr.find_host("ws-01")
    await edr.contain_host(machine_id, reason="r")
    await edr.release_host(machine_id, reason="r")
    await edr.block_hash("c" * 64, reason="r")
    await edr.unblock_hash("c" * 64)
    await edr.quarantine_file(machine_id, "d" * 40, reason="r")
    await edr.run_scan(machine_id)
    await edr.hunt(Indicator.of("ipv4", "203.0.113.5"), since=datetime(2024, 5, 1, tzinfo=UTC))
    await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC))

    seen = [(r.method, r.path) for r in sim.requests]
    assert all(r.route is not None for r in sim.requests)
    assert undocumented(seen, OPS) == []
    routes = {r.route for r in sim.requests}
    assert {"/api/machines/{id}/isolate", "/api/indicators/{id}", "/api/alerts"} <= routes
