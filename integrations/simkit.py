"""Shared machinery of the vendor simulators: request log, fault injection, transport.

Faults: the next N requests answer a status (5xx, 429 with the vendor's headers), hang
(the client times out), or -- a *lost acknowledgement* -- are carried out by the
simulator and then answered with a 5xx or a hang, as when a vendor acts and the answer
never reaches the caller.

A simulator is a stateful Starlette app imitating one vendor's HTTP API. It can be
mounted in-process with :meth:`Simulator.transport` or served on loopback by
``stanch lab``. Everything here is vendor-neutral; each vendor's ``sim.py`` adds the
routes, the state machine and the vendor's own error envelope.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

FaultKind = Literal["status", "timeout", "lost"]

LAB_RANSOMWARE_SHA256 = "8f2b7c1e5a9d4f3b6c0e1a2d7f8b9c4e5d6a3f2e1b0c9d8e7f6a5b4c3d2e1f0a"
"""The demo ransomware's SHA-256, which the lab fleet has seen on several hosts."""
LAB_C2_IP = "203.0.113.66"
"""The demo's command-and-control address, which the lab fleet has contacted."""
LAB_FLEET = ("WS-0042", "WS-0107", "WS-0311", "SRV-FS01")
"""The hostnames every EDR simulator of the lab starts with."""
LAB_SIGHTINGS: tuple[tuple[str, str, str, float], ...] = (
    # (hostname, indicator kind, value, hours ago): the ransomware reached three hosts,
    # two of which also called the C2 address; WS-0311 is clean.
    ("WS-0042", "sha256", LAB_RANSOMWARE_SHA256, 1.0),
    ("WS-0107", "sha256", LAB_RANSOMWARE_SHA256, 5.0),
    ("SRV-FS01", "sha256", LAB_RANSOMWARE_SHA256, 26.0),
    ("WS-0042", "ipv4", LAB_C2_IP, 1.0),
    ("WS-0107", "ipv4", LAB_C2_IP, 4.5),
)
"""What the lab fleet's sensors have observed."""
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class LoggedRequest:
    """One request a simulator received (for the documented-operations checks)."""

    method: str
    path: str
    route: str | None
    status: int
    lost: bool = False
    """The simulator carried the request out but its answer was lost (a fault)."""
    at: float = field(default_factory=time.monotonic, compare=False)
    """When the request arrived (monotonic seconds), to measure what a client waited."""


@dataclass
class Fault:
    """The next ``remaining`` matching requests fail.

    ``status``: answered ``status`` (and headers) without being carried out. ``timeout``:
    never answered. ``lost``: carried out, then answered ``status`` -- or never answered
    when ``status`` is ``None`` -- so the caller cannot know the vendor acted.
    """

    kind: FaultKind
    remaining: int
    status: int | None = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    path_prefix: str = ""
    hang_seconds: float = 30.0
    methods: frozenset[str] | None = None
    headers_at: Callable[[], Mapping[str, str]] | None = None
    """Headers computed when the fault fires (a vendor's epoch-valued retry header)."""

    def matches(self, method: str, path: str) -> bool:
        """Whether a request is one this fault applies to."""
        return path.startswith(self.path_prefix) and (
            self.methods is None or method in self.methods
        )


@dataclass(frozen=True)
class Sighting:
    """A sensor's observation: ``kind`` ``value`` seen on host ``host_id`` at ``at``."""

    host_id: str
    kind: str
    value: str
    at: datetime


class _Recorder:
    """ASGI middleware: apply pending faults, then log what the app answered."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        fault = self.sim._take_fault(method, path)
        if fault is not None and fault.kind == "lost":
            await self._lose_answer(fault, scope, receive, send)
            return
        if fault is not None:
            if fault.kind == "timeout":
                self.sim._log(LoggedRequest(method, path, None, 0))
                await asyncio.sleep(fault.hang_seconds)
                return
            headers = {"content-type": "application/json", **fault.headers}
            if fault.headers_at is not None:
                headers.update(fault.headers_at())
            answered = fault.status or 503
            response = Response(fault.body, status_code=answered, headers=headers)
            self.sim._log(LoggedRequest(method, path, self.sim.route_of(scope), answered))
            await response(scope, receive, send)
            return
        status = 0

        async def capture(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, capture)
        self.sim._log(LoggedRequest(method, path, scope.get("stanch.route"), status))

    async def _lose_answer(self, fault: Fault, scope: Scope, receive: Receive, send: Send) -> None:
        """Carry the request out, drop the simulator's answer, answer as the fault says."""
        acted = 0

        async def discard(message: MutableMapping[str, Any]) -> None:
            nonlocal acted
            if message["type"] == "http.response.start":
                acted = int(message["status"])

        await self.app(scope, receive, discard)
        method, path = scope["method"], scope["path"]
        # The log shows what the simulator did (its status) and that the answer was lost.
        self.sim._log(LoggedRequest(method, path, scope.get("stanch.route"), acted, lost=True))
        if fault.status is None:
            await asyncio.sleep(fault.hang_seconds)
            return
        headers = {"content-type": "application/json", **fault.headers}
        await Response(fault.body, status_code=fault.status, headers=headers)(scope, receive, send)


class Simulator:
    """Base for a vendor simulator.

    Subclasses define ``vendor`` and ``routes()``; route handlers read and change the
    subclass's state. ``requests`` records every request received, with the route
    template it matched, so a test can check each against the vendor's documented list.
    """

    vendor: str = "vendor"
    base_url: str = "https://sim.invalid"

    def __init__(self) -> None:
        self.requests: list[LoggedRequest] = []
        self.sightings: list[Sighting] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.app = self._build()

    def routes(self) -> list[BaseRoute]:
        """The vendor routes; each subclass lists its own."""
        raise NotImplementedError

    # Telemetry ------------------------------------------------------------------------
    def add_host(self, hostname: str) -> str:
        """Register a host; EDR simulators override this."""
        raise NotImplementedError(f"{self.vendor} simulates no hosts")

    def add_sighting(self, host_id: str, kind: str, value: str, *, at: datetime) -> None:
        """Record that the sensor on ``host_id`` saw ``kind`` ``value`` at ``at``."""
        canonical = value.lower() if kind in ("sha256", "md5", "domain") else value
        with self._lock:
            self.sightings.append(Sighting(host_id, kind, canonical, at))

    def sightings_of(self, kind: str, value: str, since: datetime | None = None) -> list[Sighting]:
        """The sightings of one indicator (hashes and domains compare in lower case)."""
        wanted = value.lower() if kind in ("sha256", "md5", "domain") else value
        return [
            s
            for s in self.sightings
            if s.kind == kind and s.value == wanted and (since is None or s.at >= since)
        ]

    def seed_fleet(self) -> list[str]:
        """Give an EDR simulator the lab fleet (:data:`LAB_FLEET`) and what it has seen.

        Returns the hostnames seeded; a simulator of no EDR seeds nothing.
        """
        return []

    def _seed_edr_fleet(self) -> list[str]:
        now = datetime.now(UTC)
        ids = {hostname: self.add_host(hostname) for hostname in LAB_FLEET}
        for hostname, kind, value, hours in LAB_SIGHTINGS:
            self.add_sighting(ids[hostname], kind, value, at=now - timedelta(hours=hours))
        return list(LAB_FLEET)

    def _build(self) -> ASGIApp:
        app = Starlette(routes=self.routes())
        return _Recorder(_RouteTagger(app), self)

    # Faults ---------------------------------------------------------------------------
    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        path_prefix: str = "",
    ) -> None:
        """Make the next ``count`` requests (under ``path_prefix``) answer ``status``."""
        with self._lock:
            self._faults.append(
                Fault("status", count, status, dict(headers or {}), body, path_prefix)
            )

    def hang_next(self, count: int = 1, *, seconds: float = 30.0, path_prefix: str = "") -> None:
        """Make the next ``count`` requests hang for ``seconds`` (a client timeout)."""
        with self._lock:
            self._faults.append(
                Fault("timeout", count, path_prefix=path_prefix, hang_seconds=seconds)
            )

    def throttle_next(self, count: int = 1, *, wait: float = 2.0, path_prefix: str = "") -> None:
        """Answer the next ``count`` requests 429, saying "wait ``wait`` s" the vendor's way."""
        with self._lock:
            self._faults.append(
                Fault(
                    "status",
                    count,
                    429,
                    path_prefix=path_prefix,
                    headers_at=lambda: self.throttle_headers(wait),
                )
            )

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """How this vendor tells a throttled client to wait ``wait`` seconds on a 429.

        RFC 9110 ``Retry-After`` in seconds here (Microsoft's APIs); vendors that say it
        otherwise, or not at all, override this.
        """
        return {"Retry-After": str(max(1, round(wait)))}

    def lose_next(
        self,
        count: int = 1,
        *,
        status: int | None = 503,
        path_prefix: str = "",
        methods: frozenset[str] = MUTATING_METHODS,
        hang_seconds: float = 30.0,
    ) -> None:
        """Carry out the next ``count`` state-changing requests, then lose their answers.

        The answer becomes ``status`` (a 5xx by default) or, with ``status=None``, a hang
        the client times out on: the vendor acted, the caller cannot tell.
        """
        with self._lock:
            self._faults.append(
                Fault(
                    "lost",
                    count,
                    status,
                    path_prefix=path_prefix,
                    hang_seconds=hang_seconds,
                    methods=frozenset(methods),
                )
            )

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def route_of(self, scope: Scope) -> str | None:
        """The route template a request matches, e.g. ``/users/{id}/lifecycle/suspend``."""
        app = self.app
        assert isinstance(app, _Recorder)
        inner = app.app
        assert isinstance(inner, _RouteTagger)
        return inner.template(scope)

    # Mounting -------------------------------------------------------------------------
    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process transport to this simulator that honours client timeouts."""
        return TimeoutASGITransport(self.app)

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        """An ``AsyncClient`` wired to this simulator in-process (for tests)."""
        return httpx.AsyncClient(
            transport=self.transport(),
            base_url=self.base_url,
            **kwargs,  # type: ignore[arg-type]
        )


class _RouteTagger:
    """Records which route template matched, so the request log can name operations."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def template(self, scope: Scope) -> str | None:
        from starlette.routing import Match

        for route in self.app.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", None)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["stanch.route"] = self.template(scope)
        await self.app(scope, receive, send)


class TimeoutASGITransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` that raises ``httpx.ReadTimeout`` like a socket would.

    httpx enforces timeouts in its network transports; the plain ASGI transport ignores
    them, so a hanging simulator would hang the test. This one applies the request's
    read timeout to the whole exchange.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read = timeouts.get("read")
        try:
            return await asyncio.wait_for(self._inner.handle_async_request(request), read)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("simulator did not answer in time", request=request) from exc


Handler = Callable[[Request], Awaitable[Response]]
