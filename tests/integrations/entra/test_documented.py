"""Every simulator route and every adapter request is a documented Graph operation."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from starlette.routing import Route

from integrations.entra import EntraIdentity, EntraRiskDetections, connect
from integrations.entra.sim import API, EntraSimulator
from tests.integrations.documented import operations, undocumented
from tests.integrations.entra.support import lab

GRAPH_OPS = operations("graph.operations.json")


def documented_path(path: str) -> str:
    """A request path as graph.operations.json writes it (Graph paths omit the /v1.0 root)."""
    return path.removeprefix(API)


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When matched against graph.operations.json, Then none is
    missing."""
    routes = [r for r in EntraSimulator().routes() if isinstance(r, Route)]
    pairs = [
        (method, documented_path(route.path))
        for route in routes
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to GET routes; it is not an operation
    ]

    assert len(pairs) == 13
    assert undocumented(pairs, GRAPH_OPS) == []


def test_the_check_can_fail() -> None:
    """Given an operation Graph does not document, When checked, Then it is reported."""
    assert undocumented([("DELETE", "/users/x")], GRAPH_OPS) == [("DELETE", "/users/x")]


async def test_every_adapter_request_is_documented() -> None:
    """Given every adapter verb run against a recording transport, When each request's
    (method, path) is checked, Then all are documented and each verb was exercised."""
    sim = EntraSimulator()
    seen: list[tuple[str, str, str]] = []
    inner = sim.transport()

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append((request.url.host, request.method, request.url.path))
            return await inner.handle_async_request(request)

    user_id = sim.add_user("kim@contoso.com")
    sim.add_phone_method(user_id, "+1 2065550100")
    sim.add_authenticator_method(user_id)
    sim.add_risk_detection(
        {
            "id": "d1",
            "riskEventType": "anonymizedIPAddress",
            "detectedDateTime": "2024-03-05T10:00:00Z",
        }
    )
    async with connect(lab(), transport=Recording()) as client:
        identity = EntraIdentity(client)
        await identity.find_user("kim@contoso.com")
        await identity.find_user("$svc@contoso.com")
        await identity.get_user(user_id)
        await identity.suspend_user(user_id, reason="r")
        await identity.unsuspend_user(user_id, reason="r")
        await identity.revoke_sessions(user_id)
        await identity.expire_password(user_id)
        await identity.reset_factors(user_id)
        await identity.confirm_compromised(user_id)
        await EntraRiskDetections(client).fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC))

    hosts = {host for host, _, _ in seen}
    assert hosts == {"login.microsoftonline.com", "graph.microsoft.com"}
    pairs = [
        (method, documented_path(path) if host == "graph.microsoft.com" else path)
        for host, method, path in seen
    ]
    assert undocumented(pairs, GRAPH_OPS) == []
    assert {m for m, _ in pairs} == {"GET", "POST", "PATCH", "DELETE"}
    assert len(seen) == len(sim.requests)  # nothing was served outside the simulator's log
    assert all(r.route is not None for r in sim.requests)
