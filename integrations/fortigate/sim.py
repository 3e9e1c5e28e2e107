"""A FortiGate imitation: the banned-users monitor API with its envelope, expiry and lockout.

Serves only the routes in ``tests/vendor_specs/fortigate.md`` §3. Where the reference
marks behaviour as undocumented ([U]), the choice made here is noted where it is made.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

LAB_API_TOKEN = "stanch-lab-fortigate-token"  # noqa: S105 - the simulator's public lab token
"""The token the simulator accepts (and ``PLUGIN.lab_settings`` uses)."""

BANNED = "/api/v2/monitor/user/banned"


@dataclass
class Ban:
    """One row of the banned table; ``expires`` 0 means indefinite."""

    ip: str
    created: int
    expires: int
    source: str = "Administrative"

    def row(self) -> dict[str, Any]:
        """The row as ``GET /monitor/user/banned`` lists it."""
        return {
            "ip_address": self.ip,
            "source": self.source,
            "ipv6": int(ipaddress.ip_address(self.ip).version == 6),
            "created": self.created,
            "expires": self.expires,
        }


class FortiGateSimulator(Simulator):
    """Stateful FortiOS banned-users API.

    Args:
        token: the REST API admin token it accepts.
        clock: epoch-seconds time source; inject one to make bans expire on demand.
        lockout_threshold: consecutive bad tokens after which the source is locked out
            (FortiOS's ``admin-lockout-threshold``).
        lockout_seconds: how long every request then gets 429.
        reban: [U] what ``add_users`` does to an address already banned: ``refused``
            (424, the default: the strictest reading), ``replaced`` (a new ban, new
            expiry) or ``kept`` (the old ban stands, success).
        clear_unbanned: [U] what ``clear_users`` does to an address not banned:
            ``refused`` (424, the default) or ``ignored`` (success).
    """

    vendor = "fortigate"
    base_url = "https://fortigate.lab.invalid"

    def __init__(
        self,
        *,
        token: str = LAB_API_TOKEN,
        clock: Callable[[], float] = time.time,
        lockout_threshold: int = 3,
        lockout_seconds: float = 60.0,
        reban: Literal["refused", "replaced", "kept"] = "refused",
        clear_unbanned: Literal["refused", "ignored"] = "refused",
    ) -> None:
        self.reban = reban
        self.clear_unbanned = clear_unbanned
        self.token = token
        self.clock = clock
        self.lockout_threshold = lockout_threshold
        self.lockout_seconds = lockout_seconds
        self.failed_logins = 0
        self.locked_until = 0.0
        self.banned: dict[str, dict[str, Ban]] = {}
        super().__init__()

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """FortiOS answers 429 for an auth lockout (too many failed logins), with no header."""
        return {}

    def routes(self) -> list[BaseRoute]:
        """The documented banned-users operations (reference §3)."""
        return [
            Route(BANNED, self._list, methods=["GET"]),
            Route(f"{BANNED}/check", self._check, methods=["GET"]),
            Route(f"{BANNED}/add_users", self._add_users, methods=["POST"]),
            Route(f"{BANNED}/clear_users", self._clear_users, methods=["POST"]),
            Route(f"{BANNED}/clear_all", self._clear_all, methods=["POST"]),
        ]

    # State ----------------------------------------------------------------------------
    def table(self, vdom: str = "root") -> dict[str, Ban]:
        """The live (unexpired) bans of ``vdom``, by address."""
        now = self.clock()
        bans = self.banned.setdefault(vdom, {})
        for ip in [ip for ip, ban in bans.items() if ban.expires and ban.expires <= now]:
            del bans[ip]
        return bans

    # Envelope -------------------------------------------------------------------------
    def _envelope(
        self,
        request: Request,
        *,
        http_status: int = 200,
        results: Any = None,
        action: str | None = None,
        error: int | None = None,
    ) -> JSONResponse:
        body: dict[str, Any] = {"http_method": request.method}
        if results is not None:
            body["results"] = results
        body |= {"vdom": request.query_params.get("vdom", "root"), "path": "user", "name": "banned"}
        if action is not None:
            body["action"] = action
        body |= {
            "status": "success" if http_status == 200 else "error",
            "http_status": http_status,
        }
        if error is not None:
            body["error"] = error
        body |= {"serial": "FGVM00000000000", "version": "v7.6.5", "build": 3651}
        return JSONResponse(body, status_code=http_status)

    def _authenticate(self, request: Request) -> Response | None:
        """None if the token is good; else the 401 or lockout 429 to answer with."""
        now = self.clock()
        if now < self.locked_until:
            return self._envelope(request, http_status=429)
        header = request.headers.get("authorization", "")
        # Swagger 7.6.5 declares the access_token query parameter; clients mostly send Bearer.
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        token = token or request.query_params.get("access_token")
        if token == self.token:
            self.failed_logins = 0
            return None
        self.failed_logins += 1
        if self.failed_logins >= self.lockout_threshold:
            self.locked_until = now + self.lockout_seconds
            self.failed_logins = 0
        return self._envelope(request, http_status=401)

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        """The JSON object body, or ``{}`` when the body is absent or not an object."""
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    @staticmethod
    def _ip_list(body: dict[str, Any]) -> list[str] | None:
        """``ip_addresses`` in canonical form, or None if absent, empty or invalid."""
        raw = body.get("ip_addresses")
        if not isinstance(raw, list) or not raw or not all(isinstance(i, str) for i in raw):
            return None
        try:
            return [str(ipaddress.ip_address(item)) for item in raw]
        except ValueError:
            return None

    # Handlers -------------------------------------------------------------------------
    async def _list(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        rows = [ban.row() for ban in self.table(request.query_params.get("vdom", "root")).values()]
        start = int(request.query_params.get("start", "0") or 0)
        count = request.query_params.get("count")
        rows = rows[start : start + int(count)] if count else rows[start:]
        return self._envelope(request, results=rows)

    async def _check(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        raw = request.query_params.get("ip_address")
        try:
            ip = str(ipaddress.ip_address(raw or ""))
        except ValueError:
            # 7.6.5 swagger: 424 covers a missing required parameter or invalid value.
            return self._envelope(request, http_status=424)
        banned = ip in self.table(request.query_params.get("vdom", "root"))
        return self._envelope(request, results={"ip_address": ip, "is_banned": banned})

    async def _add_users(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        body = await self._body(request)
        ips = self._ip_list(body)
        # [U] expiry omitted: modelled as 0, the documented "indefinite".
        expiry = body.get("expiry", 0)
        if ips is None or not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < 0:
            return self._envelope(request, http_status=424, action="add_users")
        created = int(self.clock())
        table = self.table(request.query_params.get("vdom", "root"))
        if self.reban == "refused" and any(ip in table for ip in ips):
            # [U] re-banning a banned address, strictest reading: refused, nothing changed.
            return self._envelope(request, http_status=424, action="add_users", error=-5)
        for ip in ips:
            if ip in table and self.reban == "kept":
                continue
            table[ip] = Ban(ip, created, created + expiry if expiry else 0)
        return self._envelope(request, results={}, action="add_users")

    async def _clear_users(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        ips = self._ip_list(await self._body(request))
        if ips is None:
            return self._envelope(request, http_status=424, action="clear_users")
        table = self.table(request.query_params.get("vdom", "root"))
        if self.clear_unbanned == "refused" and any(ip not in table for ip in ips):
            # [U] clearing an address that is not banned, strictest reading: refused.
            return self._envelope(request, http_status=424, action="clear_users")
        for ip in ips:
            table.pop(ip, None)
        return self._envelope(request, results={}, action="clear_users")

    async def _clear_all(self, request: Request) -> Response:
        if (denied := self._authenticate(request)) is not None:
            return denied
        self.table(request.query_params.get("vdom", "root")).clear()
        return self._envelope(request, results={}, action="clear_all")
