"""Every simulator route and every adapter request is a documented FortiOS operation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx
from starlette.routing import Route

from integrations.fortigate import FortiGateFirewall, FortiGateSimulator, connect
from tests.integrations.documented import explicit, undocumented

from .conftest import Clock, settings

# tests/vendor_specs/fortigate.md §3 "Banned users (IP quarantine) — monitor API".
DOCUMENTED = explicit(
    ("GET", "/api/v2/monitor/user/banned"),
    ("POST", "/api/v2/monitor/user/banned/add_users"),
    ("POST", "/api/v2/monitor/user/banned/clear_users"),
    ("POST", "/api/v2/monitor/user/banned/clear_all"),
    ("GET", "/api/v2/monitor/user/banned/check"),
)
# §1 (vdom) and §3 (check's ip_address; list's filter/paging) query parameters.
DOCUMENTED_QUERY = {"vdom", "ip_address", "filter", "start", "count", "format"}


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When each (method, path) is checked, Then all are in §3."""
    served = [
        (method, route.path)
        for route in FortiGateSimulator().routes()
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert served
    assert undocumented(served, DOCUMENTED) == []


async def test_every_request_of_a_full_scenario_is_documented(clock: Clock) -> None:
    """Given block, re-block, list, unblock, re-unblock against the simulator, When its
    request log is checked, Then every request matched a route and a documented operation."""
    sim = FortiGateSimulator(clock=clock)
    async with connect(settings(), transport=sim.transport()) as http:
        fw = FortiGateFirewall(http)
        await fw.block_ip("198.51.100.7", ttl_seconds=60, reason="r")
        await fw.block_ip("198.51.100.7", ttl_seconds=60, reason="r")
        await fw.list_blocked()
        await fw.unblock_ip("198.51.100.7")
        await fw.unblock_ip("198.51.100.7")

    logged = [(r.method, r.path) for r in sim.requests]
    assert len(logged) >= 5
    assert all(r.route is not None and r.status == 200 for r in sim.requests)
    assert undocumented(logged, DOCUMENTED) == []


class _FakeFortiGate:
    """Answers any request with a success envelope, tracking one ban so the adapter takes
    its write paths; no route table, so nothing here decides what is documented."""

    def __init__(self) -> None:
        self.banned = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        results: object = {}
        if path.endswith("/add_users"):
            self.banned = True
        elif path.endswith("/clear_users"):
            self.banned = False
        elif path.endswith("/check"):
            results = {"ip_address": request.url.params.get("ip_address"), "is_banned": self.banned}
        else:
            results = []
        body = {"status": "success", "http_status": 200, "results": results}
        return httpx.Response(200, json=body)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url="https://fw.example.invalid", assert_all_called=False) as mock:
        mock.route().mock(side_effect=_FakeFortiGate())
        yield mock


async def test_every_adapter_request_is_documented(router: respx.MockRouter) -> None:
    """Given a mock answering every request, When the adapter blocks, unblocks and lists,
    Then each request it sent is a documented operation with documented query keys."""
    async with connect(settings(base_url="https://fw.example.invalid")) as http:
        fw = FortiGateFirewall(http)
        await fw.block_ip("198.51.100.7", ttl_seconds=60, reason="r")
        await fw.unblock_ip("198.51.100.7")
        await fw.list_blocked()

    sent = [(c.request.method, c.request.url.path) for c in router.calls]
    assert {p for _, p in sent} >= {
        "/api/v2/monitor/user/banned/add_users",
        "/api/v2/monitor/user/banned/clear_users",
        "/api/v2/monitor/user/banned",
    }
    assert undocumented(sent, DOCUMENTED) == []
    for call in router.calls:
        assert set(call.request.url.params) <= DOCUMENTED_QUERY
