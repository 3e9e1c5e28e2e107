"""integrations.simkit: request log, fault injection and the timeout-honouring transport."""

from __future__ import annotations

import time

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import LoggedRequest, Simulator, TimeoutASGITransport


class TinySimulator(Simulator):
    """A two-resource vendor: items (read, create) and a health ping."""

    vendor = "tiny"
    base_url = "https://tiny.sim.invalid"

    def __init__(self) -> None:
        self.items: dict[str, dict[str, str]] = {"1": {"id": "1", "name": "first"}}
        super().__init__()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/items/{item_id}", self._get, methods=["GET"]),
            Route("/items", self._create, methods=["POST"]),
            Route("/health/ping", self._ping, methods=["GET"]),
        ]

    async def _get(self, request: Request) -> Response:
        item = self.items.get(request.path_params["item_id"])
        if item is None:
            return JSONResponse({"error": "no such item"}, status_code=404)
        return JSONResponse(item)

    async def _create(self, request: Request) -> Response:
        body = await request.json()
        item_id = str(len(self.items) + 1)
        self.items[item_id] = {"id": item_id, "name": str(body["name"])}
        return JSONResponse(self.items[item_id], status_code=201)

    async def _ping(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


@pytest.fixture
def sim() -> TinySimulator:
    return TinySimulator()


async def test_request_log_records_method_path_route_and_status(sim: TinySimulator) -> None:
    """Given a simulator with three routes
    When a read, a create, a read of a missing item and an unrouted path are requested
    Then each is logged in order with its method, path, route template and status."""
    async with sim.client() as client:
        assert (await client.get("/items/1")).json() == {"id": "1", "name": "first"}
        assert (await client.post("/items", json={"name": "second"})).status_code == 201
        assert (await client.get("/items/99")).status_code == 404
        assert (await client.delete("/nowhere")).status_code == 404

    assert sim.requests == [
        LoggedRequest("GET", "/items/1", "/items/{item_id}", 200),
        LoggedRequest("POST", "/items", "/items", 201),
        LoggedRequest("GET", "/items/99", "/items/{item_id}", 404),
        LoggedRequest("DELETE", "/nowhere", None, 404),
    ]
    assert sim.items["2"] == {"id": "2", "name": "second"}


async def test_wrong_method_on_a_known_path_is_not_a_route_match(sim: TinySimulator) -> None:
    """Given POST-only /items
    When GET /items is requested
    Then the vendor answers 405 and the log names no route (only full matches count)."""
    async with sim.client() as client:
        assert (await client.get("/items")).status_code == 405
    assert sim.requests == [LoggedRequest("GET", "/items", None, 405)]


async def test_fail_next_fails_exactly_that_many_then_recovers(sim: TinySimulator) -> None:
    """Given fail_next(2, status=503)
    When three requests are sent
    Then the first two get 503 (logged with their route), the third the real answer."""
    sim.fail_next(2, status=503)
    async with sim.client() as client:
        statuses = [(await client.get("/items/1")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [(r.route, r.status) for r in sim.requests] == [
        ("/items/{item_id}", 503),
        ("/items/{item_id}", 503),
        ("/items/{item_id}", 200),
    ]


async def test_fail_next_sends_given_headers_and_body(sim: TinySimulator) -> None:
    """Given a 429 fault with Retry-After and a JSON body
    When a request is sent
    Then the response carries that status, header and body."""
    sim.fail_next(status=429, headers={"Retry-After": "7"}, body=b'{"error":"slow down"}')
    async with sim.client() as client:
        got = await client.get("/items/1")
    assert got.status_code == 429
    assert got.headers["Retry-After"] == "7"
    assert got.json() == {"error": "slow down"}


async def test_faulted_write_does_not_reach_the_app(sim: TinySimulator) -> None:
    """Given a pending 500 fault
    When a create is sent
    Then the create is answered 500 and no item is created."""
    sim.fail_next(status=500)
    async with sim.client() as client:
        assert (await client.post("/items", json={"name": "lost"})).status_code == 500
    assert list(sim.items) == ["1"]


async def test_path_prefix_scopes_the_fault(sim: TinySimulator) -> None:
    """Given a fault scoped to /health
    When requests to /items come first
    Then they pass untouched and the fault waits for the first /health request."""
    sim.fail_next(1, status=502, path_prefix="/health")
    async with sim.client() as client:
        assert (await client.get("/items/1")).status_code == 200
        assert (await client.get("/items/1")).status_code == 200
        assert (await client.get("/health/ping")).status_code == 502
        assert (await client.get("/health/ping")).status_code == 200
    assert [r.status for r in sim.requests] == [200, 200, 502, 200]


async def test_hang_next_with_client_timeout_raises_read_timeout(sim: TinySimulator) -> None:
    """Given hang_next for 10 s and a client read timeout of 0.2 s
    When a request is sent
    Then httpx.ReadTimeout is raised in about 0.2 s, the hang is logged with status 0,
    and the next request is answered normally."""
    sim.hang_next(seconds=10.0)
    async with sim.client(timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/items/1")
        elapsed = time.monotonic() - started
        assert (await client.get("/items/1")).status_code == 200
    assert 0.15 <= elapsed < 1.5
    assert sim.requests[0] == LoggedRequest("GET", "/items/1", None, 0)
    assert sim.requests[1].status == 200


async def test_lost_acknowledgement_carries_the_request_out_then_answers_503(
    sim: TinySimulator,
) -> None:
    """Given lose_next on state-changing requests,
    When a read and then a create are sent,
    Then the read passes untouched, the create is carried out (the item exists) but
    answered 503, the log says the simulator answered 201 and the answer was lost, and the
    next create is answered normally."""
    sim.lose_next(1)
    async with sim.client() as client:
        assert (await client.get("/items/1")).status_code == 200
        assert (await client.post("/items", json={"name": "second"})).status_code == 503
        assert sim.items["2"] == {"id": "2", "name": "second"}
        assert (await client.post("/items", json={"name": "third"})).status_code == 201
    assert [(r.method, r.status, r.lost) for r in sim.requests] == [
        ("GET", 200, False),
        ("POST", 201, True),
        ("POST", 201, False),
    ]


async def test_lost_acknowledgement_as_a_timeout(sim: TinySimulator) -> None:
    """Given lose_next with no status (the answer never comes),
    When a create is sent with a short read timeout,
    Then the client times out although the item was created."""
    sim.lose_next(1, status=None, hang_seconds=10.0)
    async with sim.client(timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/items", json={"name": "second"})
    assert sim.items["2"]["name"] == "second"


async def test_transport_is_timeout_aware(sim: TinySimulator) -> None:
    """Given the simulator's transport
    When it is inspected
    Then it is a TimeoutASGITransport."""
    assert isinstance(sim.transport(), TimeoutASGITransport)


async def test_timeout_transport_without_timeout_just_answers(sim: TinySimulator) -> None:
    """Given a client with no timeout at all
    When a request is sent through TimeoutASGITransport
    Then it is answered normally."""
    async with httpx.AsyncClient(
        transport=TimeoutASGITransport(sim.app),
        base_url=sim.base_url,
        timeout=None,  # noqa: S113 - the case under test: no read timeout at all
    ) as client:
        assert (await client.get("/health/ping")).json() == {"ok": True}


async def test_clear_faults_drops_pending_faults(sim: TinySimulator) -> None:
    """Given five pending 503s and a pending hang
    When clear_faults() is called
    Then the next requests are answered normally."""
    sim.fail_next(5, status=503)
    sim.hang_next(seconds=10.0)
    sim.clear_faults()
    async with sim.client(timeout=1.0) as client:
        statuses = [(await client.get("/items/1")).status_code for _ in range(2)]
    assert statuses == [200, 200]


async def test_route_of_names_the_template(sim: TinySimulator) -> None:
    """Given a request scope for /items/7
    When route_of() is asked
    Then it names /items/{item_id}; an unknown path gives None."""
    scope = {"type": "http", "method": "GET", "path": "/items/7", "root_path": ""}
    assert sim.route_of(scope) == "/items/{item_id}"
    assert sim.route_of({**scope, "path": "/other"}) is None
