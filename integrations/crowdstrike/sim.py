"""A stateful CrowdStrike Falcon API simulator, serving only documented operations.

It reproduces what the adapters depend on: the 201 token, bearer checks, the
``{"meta", "resources", "errors"}`` envelope with per-item errors inside 2xx bodies,
asynchronous containment, duplicate IOCs, offset pagination and epoch-style rate-limit
headers. Shapes and status codes follow ``tests/vendor_specs/crowdstrike.operations.json``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

_Endpoint = Callable[[Request], Awaitable[Response]]

_CID = "5e1ab0c2d3f44a1b9c8d7e6f5a4b3c2d"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_IOC_TYPES = {"sha256", "md5", "domain", "ipv4", "ipv6"}
_RAN_ON_TYPES = {"sha256", "md5", "domain", "ipv4", "ipv6"}
_IOC_ACTIONS = {"no_action", "allow", "prevent_no_ui", "prevent", "detect"}
_DEVICE_ACTIONS = {
    "contain",
    "lift_containment",
    "hide_host",
    "unhide_host",
    "detection_suppress",
    "detection_unsuppress",
}
_OS_VERSION = {"Windows": "Windows 11", "Linux": "Ubuntu 22.04", "Mac": "macOS 14"}


class FQLError(ValueError):
    """A filter the simulator cannot parse."""


Term = tuple[str, str, str]


def parse_fql(text: str) -> list[list[Term]]:
    """Parse an FQL filter into OR-groups (``,``) of AND-ed (``+``) terms.

    Each term is ``(field, operator, value)``. Supports ``field:'quoted value'`` with
    backslash escapes, unquoted values, and the ``>=``, ``<=``, ``>``, ``<``, ``!``
    operators; no parentheses.

    Raises:
        FQLError: the filter is not of that form.
    """
    groups: list[list[Term]] = []
    terms: list[Term] = []
    i, n = 0, len(text)
    while True:
        match = re.compile(r"\s*([A-Za-z_][\w.]*)\s*:\s*(>=|<=|>|<|!)?").match(text, i)
        if match is None:
            raise FQLError(f"invalid filter at position {i}")
        field, op = match.group(1), match.group(2) or "="
        i = match.end()
        if i < n and text[i] == "'":
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise FQLError("unterminated string literal")
                char = text[i]
                if char == "\\":
                    if i + 1 >= n:
                        raise FQLError("dangling escape")
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if char == "'":
                    i += 1
                    break
                chars.append(char)
                i += 1
            value = "".join(chars)
        else:
            end = i
            while end < n and text[end] not in "+,":
                end += 1
            value = text[i:end].strip()
            if not value:
                raise FQLError(f"missing value for {field}")
            i = end
        terms.append((field, op, value))
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            groups.append(terms)
            return groups
        if text[i] == ",":
            groups.append(terms)
            terms = []
        elif text[i] != "+":
            raise FQLError(f"unexpected {text[i]!r} after a term")
        i += 1


def _matches(record: dict[str, Any], groups: list[list[Term]]) -> bool:
    return any(_matches_all(record, terms) for terms in groups)


def _matches_all(record: dict[str, Any], terms: list[Term]) -> bool:
    for field, op, value in terms:
        have = record.get(field)
        if have is None:
            return False
        if field.endswith("_timestamp"):
            left: Any = _parse_time(str(have))
            right: Any = _parse_time(value)
        else:
            # Exact string match is case-sensitive in FQL.
            left, right = str(have), value
        ok = {
            "=": left == right,
            "!": left != right,
            ">=": left >= right,
            "<=": left <= right,
            ">": left > right,
            "<": left < right,
        }[op]
        if not ok:
            return False
    return True


def _parse_time(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise FQLError(f"invalid timestamp {value!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CrowdStrikeSimulator(Simulator):
    """CrowdStrike Falcon API (OAuth2, Hosts, IOC Management, Alerts v2), in memory.

    Args:
        settle_seconds: how long a containment or lift stays pending before the
            simulated sensor acknowledges it.
        rate_limit_per_minute: requests allowed per minute before 429; ``None`` for
            no limit.
        token_lifetime: ``expires_in`` of issued tokens, in seconds (Falcon: 1799).
        duplicate_ioc_status: [U] the status of a create for an IOC whose type and value
            exist: 400 (the default: a whole-request failure) or 409; either way the
            duplicate rides as an ``errors[]`` entry with that code.
        clock: monotonic time source for token expiry, settling and rate windows;
            tests inject one to move time.
    """

    vendor = "crowdstrike"
    base_url = "https://api.crowdstrike.com"
    LAB_CLIENT_ID = "stanch-lab-crowdstrike"
    LAB_CLIENT_SECRET = "stanch-lab-crowdstrike-secret"  # noqa: S105 - simulator-only lab credential
    REGION = "us-1"

    def __init__(
        self,
        *,
        settle_seconds: float = 0.5,
        rate_limit_per_minute: int | None = None,
        token_lifetime: int = 1799,
        duplicate_ioc_status: int = 400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.duplicate_ioc_status = duplicate_ioc_status
        self.settle_seconds = settle_seconds
        self.rate_limit_per_minute = rate_limit_per_minute
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.hosts: dict[str, dict[str, Any]] = {}
        self.iocs: dict[str, dict[str, Any]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}
        self.tokens_issued = 0
        self._pending: dict[str, tuple[str, float]] = {}
        self._tokens: dict[str, float] = {}
        self._window_start = clock()
        self._window_count = 0
        super().__init__()

    # Seeding ---------------------------------------------------------------------------
    def add_host(
        self,
        hostname: str,
        *,
        platform: str = "Windows",
        local_ip: str | None = None,
        external_ip: str | None = None,
    ) -> str:
        """Register a host with a sensor; return its AID (32 hex digits)."""
        aid = uuid.uuid4().hex
        n = len(self.hosts)
        now = _now_iso()
        self.hosts[aid] = {
            "device_id": aid,
            "cid": _CID,
            "hostname": hostname,
            "platform_name": platform,
            "os_version": _OS_VERSION.get(platform, platform),
            "product_type_desc": "Workstation",
            "agent_version": "7.18.18902.0",
            "local_ip": local_ip or f"10.0.{n // 250}.{n % 250 + 10}",
            "external_ip": external_ip or "198.51.100.7",
            "mac_address": f"02-00-00-00-{n // 256:02x}-{n % 256:02x}",
            "first_seen": now,
            "last_seen": now,
            "modified_timestamp": now,
            "status": "normal",
            "tags": [],
            "groups": [],
            "reduced_functionality_mode": "no",
        }
        return aid

    def add_alert(self, payload: dict[str, Any]) -> None:
        """Register an Alerts v2 entity (it must carry ``composite_id``)."""
        composite_id = payload.get("composite_id")
        if not isinstance(composite_id, str) or not composite_id:
            raise ValueError("an alert needs a composite_id")
        self.alerts[composite_id] = json.loads(json.dumps(payload))

    def seed_fleet(self) -> list[str]:
        """The lab fleet and its sightings (see :meth:`Simulator.seed_fleet`)."""
        return self._seed_edr_fleet()

    def host_status(self, aid: str) -> str:
        """The device ``status`` a client would read now (settling pending actions)."""
        self._settle()
        return str(self.hosts[aid]["status"])

    # Routes ----------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        table: list[tuple[str, str, _Endpoint, bool]] = [
            ("/oauth2/token", "POST", self._token, False),
            ("/devices/queries/devices/v1", "GET", self._query_devices, True),
            ("/devices/entities/devices/v2", "GET", self._get_devices, True),
            ("/devices/entities/devices/v2", "POST", self._post_devices, True),
            ("/devices/entities/devices-actions/v2", "POST", self._device_action, True),
            ("/iocs/entities/indicators/v1", "POST", self._create_iocs, True),
            ("/iocs/entities/indicators/v1", "GET", self._get_iocs, True),
            ("/iocs/entities/indicators/v1", "DELETE", self._delete_iocs, True),
            ("/iocs/queries/indicators/v1", "GET", self._query_iocs, True),
            ("/indicators/queries/devices/v1", "GET", self._devices_ran_on, True),
            ("/alerts/queries/alerts/v2", "GET", self._query_alerts, True),
            ("/alerts/entities/alerts/v2", "POST", self._get_alerts, True),
        ]
        by_path: dict[str, dict[str, _Endpoint]] = {}
        for path, method, handler, authed in table:
            by_path.setdefault(path, {})[method] = self._guard(handler, authed=authed)
        routes: list[BaseRoute] = []
        for path, handlers in by_path.items():
            route = Route(path, self._dispatch(handlers), methods=list(handlers))
            # Starlette adds HEAD to every GET route; Falcon documents no HEAD operation.
            if route.methods is not None:
                route.methods.discard("HEAD")
            routes.append(route)
        return routes

    @staticmethod
    def _dispatch(handlers: dict[str, _Endpoint]) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            return await handlers[request.method](request)

        return endpoint

    def _guard(self, handler: _Endpoint, *, authed: bool) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            limited = self._rate_limited()
            if limited is not None:
                return limited
            if authed and not self._authorized(request):
                return self._envelope(
                    [], errors=[(401, "access denied, authorization failed")], status=401
                )
            self._settle()
            try:
                return await handler(request)
            except FQLError as exc:
                return self._envelope([], errors=[(400, f"invalid filter: {exc}")], status=400)

        return endpoint

    # Cross-cutting ---------------------------------------------------------------------
    def _rate_headers(self) -> dict[str, str]:
        limit = self.rate_limit_per_minute
        if limit is None:
            return {"X-Ratelimit-Limit": "6000", "X-Ratelimit-Remaining": "5999"}
        return {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(max(0, limit - self._window_count)),
        }

    def _rate_limited(self) -> Response | None:
        now = self.clock()
        if now - self._window_start >= 60:
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        limit = self.rate_limit_per_minute
        if limit is None or self._window_count <= limit:
            return None
        # Falcon names the moment the window reopens, as epoch seconds (not a delay).
        wait = self._window_start + 60 - now
        retry_at = math.ceil(time.time() + wait)
        return self._envelope(
            [],
            errors=[(429, "API rate limit exceeded.")],
            status=429,
            headers={"X-Ratelimit-Retryafter": str(retry_at)},
        )

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """Falcon names the moment to retry, in epoch seconds (not a delay)."""
        return {
            "X-Ratelimit-Retryafter": str(math.ceil(time.time() + wait)),
            "X-Ratelimit-Remaining": "0",
        }

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        expires = self._tokens.get(token)
        return expires is not None and self.clock() < expires

    def _settle(self) -> None:
        now = self.clock()
        for aid, (target, since) in list(self._pending.items()):
            if now - since >= self.settle_seconds:
                self.hosts[aid]["status"] = target
                self.hosts[aid]["modified_timestamp"] = _now_iso()
                del self._pending[aid]

    def _envelope(
        self,
        resources: list[Any] | None,
        *,
        errors: list[tuple[int, str]] | None = None,
        status: int = 200,
        pagination: dict[str, Any] | None = None,
        writes: int | None = None,
        headers: dict[str, str] | None = None,
        powered_by: str = "crowdstrike-api-sim",
    ) -> JSONResponse:
        trace = str(uuid.uuid4())
        meta: dict[str, Any] = {
            "query_time": 0.001,
            "powered_by": powered_by,
            "trace_id": trace,
        }
        if pagination is not None:
            meta["pagination"] = pagination
        if writes is not None:
            meta["writes"] = {"resources_affected": writes}
        body = {
            "meta": meta,
            "resources": resources,
            "errors": [{"code": code, "message": message} for code, message in errors or []],
        }
        return JSONResponse(
            body,
            status_code=status,
            headers={"X-Cs-Traceid": trace, **self._rate_headers(), **(headers or {})},
        )

    async def _json(self, request: Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _page(self, request: Request, *, default: int, maximum: int) -> tuple[int, int]:
        try:
            limit = int(request.query_params.get("limit", default))
            offset = int(request.query_params.get("offset", 0))
        except ValueError as exc:
            raise FQLError("limit and offset must be integers") from exc
        if not 1 <= limit <= maximum or offset < 0:
            raise FQLError(f"limit must be 1-{maximum} and offset >= 0")
        return limit, offset

    @staticmethod
    def _sorted(
        records: list[dict[str, Any]], sort: str | None, separator: str
    ) -> list[dict[str, Any]]:
        if not sort:
            return records
        field, _, direction = sort.partition(separator)
        if direction not in ("", "asc", "desc"):
            raise FQLError(f"invalid sort {sort!r}")
        return sorted(records, key=lambda r: str(r.get(field, "")), reverse=direction == "desc")

    def _query_ids(
        self,
        request: Request,
        records: list[dict[str, Any]],
        *,
        maximum: int,
        id_field: str,
        sort_separator: str,
        powered_by: str,
    ) -> Response:
        """A ``queries`` endpoint: FQL ``filter``, ``sort``, ``limit``/``offset``; ids only."""
        limit, offset = self._page(request, default=100, maximum=maximum)
        text = request.query_params.get("filter")
        if text:
            terms = parse_fql(text)
            records = [r for r in records if _matches(r, terms)]
        records = self._sorted(records, request.query_params.get("sort"), sort_separator)
        page = records[offset : offset + limit]
        return self._envelope(
            [r[id_field] for r in page],
            pagination={"offset": offset, "limit": limit, "total": len(records)},
            powered_by=powered_by,
        )

    # OAuth2 ----------------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        client_id = form.get("client_id", [""])[0]
        client_secret = form.get("client_secret", [""])[0]
        if not client_id or not client_secret:
            return self._envelope(
                [], errors=[(400, "client_id and client_secret are required")], status=400
            )
        if not (
            secrets.compare_digest(client_id, self.LAB_CLIENT_ID)
            and secrets.compare_digest(client_secret, self.LAB_CLIENT_SECRET)
        ):
            return self._envelope(
                [],
                errors=[(401, "access denied, invalid client_id or client_secret")],
                status=401,
            )
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.clock() + self.token_lifetime
        self.tokens_issued += 1
        return JSONResponse(
            {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime},
            status_code=201,
            headers={"X-Cs-Region": self.REGION, **self._rate_headers()},
        )

    # Hosts -----------------------------------------------------------------------------
    async def _query_devices(self, request: Request) -> Response:
        return self._query_ids(
            request,
            list(self.hosts.values()),
            maximum=5000,
            id_field="device_id",
            sort_separator=".",
            powered_by="device-api",
        )

    def _devices(self, ids: list[str]) -> Response:
        if not ids:
            return self._envelope([], errors=[(400, "ids is required")], status=400)
        found = [dict(self.hosts[i]) for i in ids if i in self.hosts]
        # Documented statuses are 200/403/429/500 only: unknown ids ride in errors[].
        missing = [(404, f"Device {i} not found") for i in ids if i not in self.hosts]
        return self._envelope(found, errors=missing, powered_by="device-api")

    async def _get_devices(self, request: Request) -> Response:
        return self._devices(request.query_params.getlist("ids"))

    async def _post_devices(self, request: Request) -> Response:
        body = await self._json(request)
        ids = body.get("ids") if body else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return self._envelope([], errors=[(400, 'body must be {"ids": [...]}')], status=400)
        return self._devices(ids)

    async def _device_action(self, request: Request) -> Response:
        action = request.query_params.get("action_name")
        if action not in _DEVICE_ACTIONS:
            return self._envelope([], errors=[(400, f"invalid action_name {action!r}")], status=400)
        if action not in ("contain", "lift_containment"):
            return self._envelope([], errors=[(400, f"{action} is not simulated")], status=400)
        body = await self._json(request)
        ids = body.get("ids") if body else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return self._envelope([], errors=[(400, 'body must be {"ids": [...]}')], status=400)
        done: list[dict[str, Any]] = []
        errors: list[tuple[int, str]] = []
        for aid in ids:
            host = self.hosts.get(aid)
            if host is None:
                errors.append((404, f"Device {aid} not found"))
                continue
            status = host["status"]
            if action == "contain" and status in ("contained", "containment_pending"):
                errors.append((409, f"Host {aid} is already contained or containment is pending"))
                continue
            if action == "lift_containment" and status in ("normal", "lift_containment_pending"):
                errors.append((409, f"Host {aid} is not contained"))
                continue
            pending, target = (
                ("containment_pending", "contained")
                if action == "contain"
                else ("lift_containment_pending", "normal")
            )
            host["status"] = pending
            host["modified_timestamp"] = _now_iso()
            self._pending[aid] = (target, self.clock())
            done.append({"id": aid, "path": ""})
        # Queued actions and per-host failures share one 202 body.
        return self._envelope(done, errors=errors, status=202, powered_by="device-api")

    # IOC management --------------------------------------------------------------------
    async def _create_iocs(self, request: Request) -> Response:
        body = await self._json(request)
        indicators = body.get("indicators") if body else None
        if not isinstance(indicators, list) or not indicators:
            return self._envelope(
                [], errors=[(400, "body must carry a non-empty indicators list")], status=400
            )
        created: list[dict[str, Any]] = []
        errors: list[tuple[int, str]] = []
        for item in indicators:
            problem = _ioc_problem(item)
            if problem is not None:
                errors.append((400, problem))
                continue
            kind, value = item["type"], str(item["value"])
            if kind in ("sha256", "md5"):
                value = value.lower()
            if any(i["type"] == kind and i["value"] == value for i in self.iocs.values()):
                errors.append(
                    (
                        self.duplicate_ioc_status,
                        f"Duplicate type: '{kind}' and value: '{value}' combination.",
                    )
                )
                continue
            now = _now_iso()
            ioc = {
                "id": secrets.token_hex(32),
                "type": kind,
                "value": value,
                "action": item["action"],
                "severity": item.get("severity", ""),
                "platforms": item["platforms"],
                "applied_globally": bool(item.get("applied_globally")),
                "host_groups": item.get("host_groups", []),
                "description": item.get("description", ""),
                "source": item.get("source", ""),
                "tags": item.get("tags", []),
                "expiration": item.get("expiration"),
                "expired": False,
                "deleted": False,
                "created_on": now,
                "created_by": self.LAB_CLIENT_ID,
                "modified_on": now,
                "modified_by": self.LAB_CLIENT_ID,
            }
            self.iocs[ioc["id"]] = ioc
            created.append(dict(ioc))
        # Nothing created means the request failed as a whole; partial success is 201.
        status = 201 if created else max(code for code, _ in errors) if errors else 400
        return self._envelope(
            created, errors=errors, status=status, writes=len(created), powered_by="ioc-manager"
        )

    async def _query_iocs(self, request: Request) -> Response:
        return self._query_ids(
            request,
            list(self.iocs.values()),
            maximum=2000,
            id_field="id",
            sort_separator=".",
            powered_by="ioc-manager",
        )

    async def _get_iocs(self, request: Request) -> Response:
        ids = request.query_params.getlist("ids")
        if not ids:
            return self._envelope([], errors=[(400, "ids is required")], status=400)
        found = [dict(self.iocs[i]) for i in ids if i in self.iocs]
        missing = [(404, f"Indicator {i} not found") for i in ids if i not in self.iocs]
        return self._envelope(found, errors=missing, powered_by="ioc-manager")

    async def _delete_iocs(self, request: Request) -> Response:
        text = request.query_params.get("filter")
        ids = request.query_params.getlist("ids")
        if text:
            # The filter wins when both are sent, as documented.
            terms = parse_fql(text)
            ids = [i for i, r in self.iocs.items() if _matches(r, terms)]
        elif not ids:
            return self._envelope([], errors=[(400, "ids or filter is required")], status=400)
        deleted = [i for i in ids if self.iocs.pop(i, None) is not None]
        missing = [(404, f"Indicator {i} not found") for i in ids if i not in deleted]
        return self._envelope(
            deleted, errors=missing, writes=len(deleted), powered_by="ioc-manager"
        )

    # Threat hunting --------------------------------------------------------------------
    async def _devices_ran_on(self, request: Request) -> Response:
        """DevicesRanOn: the AIDs that observed an indicator, offset-paginated.

        [U] The documented limit range is not published; the strictest common Falcon
        query bound (1-100, default 100) is enforced. Falcon reports no time window here.
        """
        kind = request.query_params.get("type")
        value = request.query_params.get("value")
        if kind not in _RAN_ON_TYPES or not value:
            return self._envelope(
                [],
                errors=[(400, "type (sha256, md5, domain, ipv4, ipv6) and value are required")],
                status=400,
                powered_by="ioc-manager",
            )
        if kind == "sha256" and not _HEX64.fullmatch(value):
            return self._envelope([], errors=[(400, f"invalid sha256 value {value!r}")], status=400)
        limit, offset = self._page(request, default=100, maximum=100)
        aids = list(dict.fromkeys(s.host_id for s in self.sightings_of(kind, value)))
        aids = [a for a in aids if a in self.hosts]
        return self._envelope(
            aids[offset : offset + limit],
            pagination={"offset": offset, "limit": limit, "total": len(aids)},
            powered_by="ioc-manager",
        )

    # Alerts ----------------------------------------------------------------------------
    async def _query_alerts(self, request: Request) -> Response:
        # Alerts sort with a pipe: created_timestamp|asc.
        return self._query_ids(
            request,
            list(self.alerts.values()),
            maximum=10000,
            id_field="composite_id",
            sort_separator="|",
            powered_by="detectsapi",
        )

    async def _get_alerts(self, request: Request) -> Response:
        body = await self._json(request)
        ids = body.get("composite_ids") if body else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return self._envelope(
                [], errors=[(400, 'body must be {"composite_ids": [...]}')], status=400
            )
        found = [json.loads(json.dumps(self.alerts[i])) for i in ids if i in self.alerts]
        missing = [(404, f"Alert {i} not found") for i in ids if i not in self.alerts]
        return self._envelope(found, errors=missing, powered_by="detectsapi")


def _ioc_problem(item: object) -> str | None:
    if not isinstance(item, dict):
        return "each indicator must be an object"
    kind, value = item.get("type"), item.get("value")
    if kind not in _IOC_TYPES:
        return f"invalid type {kind!r}"
    if not isinstance(value, str) or not value:
        return "value is required"
    if kind == "sha256" and not _HEX64.fullmatch(value):
        return f"invalid sha256 value {value!r}"
    if item.get("action") not in _IOC_ACTIONS:
        return f"invalid action {item.get('action')!r}"
    platforms = item.get("platforms")
    if not isinstance(platforms, list) or not platforms:
        return "platforms is required"
    if not item.get("applied_globally") and not item.get("host_groups"):
        return "either applied_globally or host_groups is required"
    return None
