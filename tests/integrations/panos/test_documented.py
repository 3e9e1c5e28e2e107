"""Every simulator route and every adapter request is a documented PAN-OS XML API form."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from starlette.routing import Route

from integrations.panos import PanosFirewall, PanosSimulator, connect
from tests.integrations.documented import explicit, undocumented

from .conftest import Clock, login_settings

# tests/vendor_specs/panos.xml-api.md §1: one endpoint, `/api/`, GET with a query string
# or POST with a form body.
DOCUMENTED = explicit(("GET", "/api/"), ("POST", "/api/"))
# §1 "Request selector": the documented values of type=.
DOCUMENTED_TYPES = {
    "keygen", "op", "config", "commit", "user-id", "export", "import", "report", "log", "version",
}  # fmt: skip
# The parameters each request type the adapter uses is documented with: §3 keygen,
# §4 user-id, §4/§5 op (vsys/target are optional and not sent).
DOCUMENTED_PARAMS = {
    "keygen": {"type", "user", "password"},
    "user-id": {"type", "cmd"},
    "op": {"type", "cmd"},
}


def xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 - the adapter's own request XML


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's routes, When each (method, path) is checked, Then all are §1's."""
    served = [
        (method, route.path)
        for route in PanosSimulator().routes()
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    ]
    assert served
    assert undocumented(served, DOCUMENTED) == []


async def test_every_request_of_a_full_scenario_is_documented(clock: Clock) -> None:
    """Given keygen, block, re-block, list, unblock, re-unblock against the simulator, When
    its log is checked, Then every request matched its route, a documented (method, path)
    and a documented type= selector, and no commit was ever requested (§4: none needed)."""
    sim = PanosSimulator(clock=clock)
    async with connect(login_settings(), transport=sim.transport()) as http:
        fw = PanosFirewall(http)
        await fw.block_ip("203.0.113.7", ttl_seconds=60, reason="r")
        await fw.block_ip("203.0.113.7", ttl_seconds=60, reason="r")
        await fw.list_blocked()
        await fw.unblock_ip("203.0.113.7")
        await fw.unblock_ip("203.0.113.7")

    assert len(sim.requests) == 6
    assert all(r.route == "/api/" and r.status == 200 for r in sim.requests)
    assert undocumented([(r.method, r.path) for r in sim.requests], DOCUMENTED) == []
    assert set(sim.request_types) <= DOCUMENTED_TYPES
    assert "commit" not in sim.request_types


class _FakePanos:
    """Answers keygen with a key and everything else with an empty success; it has no
    notion of what is documented, so the checks below judge the adapter alone."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        kind = parse_qs(request.content.decode()).get("type", [""])[0]
        if kind == "keygen":
            body = '<response status="success"><result><key>K</key></result></response>'
        else:
            body = '<response status="success"><result/></response>'
        return httpx.Response(200, text=body)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url="https://fw.example.invalid", assert_all_called=False) as mock:
        mock.route().mock(side_effect=_FakePanos())
        yield mock


async def test_every_adapter_request_is_documented(router: respx.MockRouter) -> None:
    """Given a mock answering every request, When the adapter keygens, blocks, unblocks and
    lists, Then each request is a documented (method, path), type and parameter set, and
    the op command is §4's registered-ip read-back."""
    async with connect(login_settings(base_url="https://fw.example.invalid")) as http:
        fw = PanosFirewall(http)
        await fw.block_ip("203.0.113.7", ttl_seconds=60, reason="r")
        await fw.unblock_ip("203.0.113.7")
        await fw.list_blocked()

    requests = [call.request for call in router.calls]
    assert undocumented([(r.method, r.url.path) for r in requests], DOCUMENTED) == []
    kinds = []
    for request in requests:
        params = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        kinds.append(params["type"])
        assert set(params) == DOCUMENTED_PARAMS[params["type"]]
        assert request.url.query == b""
        if params["type"] == "user-id":
            assert xml(params["cmd"]).tag == "uid-message"
        if params["type"] == "op":
            assert xml(params["cmd"]).find("./object/registered-ip/tag/entry") is not None
    assert kinds == ["keygen", "user-id", "user-id", "op"]
