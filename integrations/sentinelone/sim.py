"""A stateful imitation of the SentinelOne 2.1 API: agents, network quarantine, threats,
the hash blocklist. Filters select everything they match, empty ones included, as S1's do."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import operator
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Handler, Simulator

API = "/web/api/v2.1"
MITIGATIONS = frozenset(
    {
        "kill",
        "quarantine",
        "remediate",
        "rollback-remediation",
        "un-quarantine",
        "network-quarantine",
    }
)
OS_TYPES = frozenset({"windows", "macos", "linux", "windows_legacy"})
_HASH = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_MAX_LIMIT = 1000


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _errors(status: int, code: int, title: str, detail: str | None = None) -> Response:
    return JSONResponse(
        {"errors": [{"code": code, "title": title, "detail": detail}]}, status_code=status
    )


class _Invalid(ValueError):
    pass


def _csv(request: Request, name: str) -> list[str] | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    return [part for part in raw.split(",") if part]


def _os_type(os_name: str) -> str:
    lowered = os_name.lower()
    if "windows" in lowered:
        return "windows"
    if "mac" in lowered or "os x" in lowered:
        return "macos"
    return "linux"


class SentinelOneSimulator(Simulator):
    """The S1 management API, in memory.

    Args:
        settle_seconds: how long ``disconnecting``/``connecting`` last before the agent
            reports ``disconnected``/``connected``.
        rate_limit_per_minute: answer 429 beyond this many calls in a sliding minute.
        query_seconds: how long a Deep Visibility query stays ``RUNNING`` before it is
            ``FINISHED``; ``None`` for a query that never finishes.
        clock: monotonic time source.
    """

    vendor = "sentinelone"
    base_url = "https://sentinelone.sim.invalid"
    api_token = "stanch-lab-sentinelone-token"  # noqa: S105 - lab credential, not a secret

    def __init__(
        self,
        *,
        settle_seconds: float = 0.5,
        rate_limit_per_minute: int | None = None,
        query_seconds: float | None = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.query_seconds = query_seconds
        self.dv_queries: dict[str, dict[str, Any]] = {}
        self.settle_seconds = settle_seconds
        self.rate_limit_per_minute = rate_limit_per_minute
        self.clock = clock
        self.agents: dict[str, dict[str, Any]] = {}
        self.threats: list[dict[str, Any]] = []
        self.blocklist: dict[str, dict[str, Any]] = {}
        self._settling: dict[str, tuple[str, float]] = {}
        self._calls: deque[float] = deque()
        super().__init__()

    # Seeding ----------------------------------------------------------------------------
    @staticmethod
    def _new_id() -> str:
        # S1 ids are 18-digit decimal strings.
        return str(10**17 + secrets.randbelow(9 * 10**17))

    def add_host(
        self,
        hostname: str,
        *,
        os_name: str = "Windows 11",
        local_ip: str | None = None,
        external_ip: str | None = None,
    ) -> str:
        """Register a connected, active agent; returns its id."""
        agent_id = self._new_id()
        now = _iso(datetime.now(UTC))
        self.agents[agent_id] = {
            "id": agent_id,
            "uuid": secrets.token_hex(16),
            "computerName": hostname,
            "networkStatus": "connected",
            "isActive": True,
            "isDecommissioned": False,
            "lastActiveDate": now,
            "registeredAt": now,
            "osName": os_name,
            "osType": _os_type(os_name),
            "osRevision": None,
            "externalIp": external_ip,
            "networkInterfaces": (
                [{"id": self._new_id(), "name": "Ethernet", "inet": [local_ip], "inet6": []}]
                if local_ip
                else []
            ),
            "agentVersion": "23.4.2.14",
            "siteId": "475482421366727779",
            "groupId": "475482421375116388",
            "accountId": "433241117337583618",
            "infected": False,
            "activeThreats": 0,
        }
        return agent_id

    def add_threat(self, payload: dict[str, Any]) -> str:
        """Store a threat as ``GET /threats`` returns it; returns its id."""
        threat = copy.deepcopy(payload)
        threat.setdefault("id", self._new_id())
        info = threat.setdefault("threatInfo", {})
        if isinstance(info, dict):
            info.setdefault("threatId", threat["id"])
            info.setdefault("createdAt", _iso(datetime.now(UTC)))
        self.threats.append(threat)
        return str(threat["id"])

    def seed_fleet(self) -> list[str]:
        """The lab fleet and its sightings (see :meth:`Simulator.seed_fleet`)."""
        return self._seed_edr_fleet()

    def network_status(self, agent_id: str) -> str:
        """The agent's ``networkStatus`` now (after any transition that has settled)."""
        return str(self._agent(agent_id)["networkStatus"])

    # Plumbing ---------------------------------------------------------------------------
    def throttle_headers(self, wait: float) -> dict[str, str]:
        """[U] SentinelOne documents no rate-limit header; a 429 says nothing about when."""
        return {}

    def routes(self) -> list[BaseRoute]:
        api = self._api
        return [
            Route(f"{API}/agents", api(self._list_agents), methods=["GET"]),
            Route(f"{API}/agents/actions/disconnect", api(self._disconnect), methods=["POST"]),
            Route(f"{API}/agents/actions/connect", api(self._connect), methods=["POST"]),
            Route(f"{API}/threats", api(self._list_threats), methods=["GET"]),
            Route(f"{API}/threats/mitigate/{{action}}", api(self._mitigate), methods=["POST"]),
            Route(f"{API}/restrictions", api(self._list_blocklist), methods=["GET"]),
            Route(f"{API}/restrictions", api(self._add_blocklist), methods=["POST"]),
            Route(f"{API}/restrictions", api(self._delete_blocklist), methods=["DELETE"]),
            Route(f"{API}/dv/init-query", api(self._dv_init), methods=["POST"]),
            Route(f"{API}/dv/query-status", api(self._dv_status), methods=["GET"]),
            Route(f"{API}/dv/events", api(self._dv_events), methods=["GET"]),
            Route(f"{API}/dv/cancel-query", api(self._dv_cancel), methods=["POST"]),
        ]

    def _api(self, handler: Handler) -> Handler:
        """Token check, then the rate limit, then the handler."""

        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            if header != f"ApiToken {self.api_token}":
                return _errors(401, 4010010, "Authentication Failed", "Invalid API token")
            if self.rate_limit_per_minute is not None:
                now = self.clock()
                while self._calls and self._calls[0] <= now - 60:
                    self._calls.popleft()
                if len(self._calls) >= self.rate_limit_per_minute:
                    # S1 documents no rate-limit header, so none is sent.
                    return _errors(429, 4290010, "Too Many Requests", "Rate limit exceeded")
                self._calls.append(now)
            try:
                return await handler(request)
            except _Invalid as exc:
                return _errors(400, 4000010, "Validation Error", str(exc))

        return endpoint

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        """``{"data", "pagination": {"totalItems", "nextCursor"}}`` for one page."""
        try:
            limit = int(request.query_params.get("limit", 10))
            skip = int(request.query_params.get("skip", 0))
        except ValueError as exc:
            raise _Invalid("limit and skip must be integers") from exc
        if not 1 <= limit <= _MAX_LIMIT or not 0 <= skip <= _MAX_LIMIT:
            raise _Invalid(f"limit must be 1..{_MAX_LIMIT}, skip 0..{_MAX_LIMIT}")
        cursor = request.query_params.get("cursor")
        if cursor is not None:
            try:
                skip = int(json.loads(base64.b64decode(cursor, validate=True))["offset"])
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise _Invalid("Invalid cursor") from exc
        page = items[skip : skip + limit]
        following = skip + limit
        next_cursor = (
            base64.b64encode(json.dumps({"offset": following}).encode()).decode()
            if following < len(items)
            else None
        )
        return JSONResponse(
            {"data": page, "pagination": {"totalItems": len(items), "nextCursor": next_cursor}}
        )

    @staticmethod
    async def _json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise _Invalid("body is not JSON") from exc
        if not isinstance(body, dict):
            raise _Invalid("body must be a JSON object")
        return body

    # Deep Visibility --------------------------------------------------------------------
    def _dv_state(self, query: dict[str, Any]) -> str:
        limit = self.query_seconds
        if query["state"] == "RUNNING" and limit is not None:
            query["state"] = "FINISHED" if self.clock() - query["started"] >= limit else "RUNNING"
        return str(query["state"])

    def _dv_query(self, query_id: str | None) -> dict[str, Any]:
        if not query_id:
            raise _Invalid("queryId is required")
        query = self.dv_queries.get(query_id)
        if query is None:
            raise _Invalid(f"queryId {query_id} not found")
        return query

    async def _dv_init(self, request: Request) -> Response:
        """``{"query", "fromDate", "toDate"}`` to ``{"data": {"queryId"}}``; runs async."""
        body = await self._json(request)
        text = body.get("query")
        match = _DV_QUERY.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise _Invalid("query is invalid or not supported by the simulator")
        since = _dv_time(body.get("fromDate"), "fromDate")
        until = _dv_time(body.get("toDate"), "toDate")
        if since >= until:
            raise _Invalid("fromDate must be before toDate")
        kind = _DV_KINDS[match["field"]]
        events = [
            {
                "agentId": s.host_id,
                "agentName": self.agents[s.host_id]["computerName"],
                "agentUuid": self.agents[s.host_id]["uuid"],
                "eventType": _DV_EVENT_TYPES.get(kind, "IP Connect"),
                "createdAt": _iso(s.at),
                "id": self._new_id(),
            }
            for s in self.sightings_of(kind, match["value"], since)
            if s.at <= until and s.host_id in self.agents
        ]
        query_id = "q" + secrets.token_hex(10)
        self.dv_queries[query_id] = {"state": "RUNNING", "started": self.clock(), "events": events}
        return JSONResponse({"data": {"queryId": query_id}})

    async def _dv_status(self, request: Request) -> Response:
        query = self._dv_query(request.query_params.get("queryId"))
        state = self._dv_state(query)
        progress = 100 if state == "FINISHED" else 40
        return JSONResponse({"data": {"responseState": state, "progressStatus": progress}})

    async def _dv_events(self, request: Request) -> Response:
        query = self._dv_query(request.query_params.get("queryId"))
        state = self._dv_state(query)
        if state != "FINISHED":
            # [U] Events of an unfinished query are not documented; refuse them.
            raise _Invalid(f"query is {state}, not FINISHED")
        return self._page(request, list(query["events"]))

    async def _dv_cancel(self, request: Request) -> Response:
        body = await self._json(request)
        query = self._dv_query(body.get("queryId"))
        if self._dv_state(query) == "RUNNING":
            query["state"] = "QUERY_CANCELLED"
        return JSONResponse({"data": {"success": True}})

    # Agents -----------------------------------------------------------------------------
    def _agent(self, agent_id: str) -> dict[str, Any]:
        agent = self.agents[agent_id]
        settling = self._settling.get(agent_id)
        if settling is not None and self.clock() >= settling[1]:
            agent["networkStatus"] = settling[0]
            del self._settling[agent_id]
        return agent

    def _select_agents(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        """The agents a filter selects; an empty filter selects all of them."""
        agents = [self._agent(a) for a in self.agents]
        ids = flt.get("ids")
        if ids is not None:
            if not isinstance(ids, list):
                raise _Invalid("filter.ids must be a list")
            agents = [a for a in agents if a["id"] in {str(i) for i in ids}]
        name = flt.get("computerName")
        if name is not None:
            agents = [a for a in agents if a["computerName"].lower() == str(name).lower()]
        return agents

    async def _list_agents(self, request: Request) -> Response:
        agents = [self._agent(a) for a in self.agents]
        ids = _csv(request, "ids")
        if ids is not None:
            agents = [a for a in agents if a["id"] in ids]
        name = request.query_params.get("computerName")
        if name is not None:
            # Exact match; Windows computer names are case-insensitive.
            agents = [a for a in agents if a["computerName"].lower() == name.lower()]
        contains = _csv(request, "computerName__contains")
        if contains is not None:
            agents = [
                a for a in agents if any(c.lower() in a["computerName"].lower() for c in contains)
            ]
        statuses = _csv(request, "networkStatuses")
        if statuses is not None:
            agents = [a for a in agents if a["networkStatus"] in statuses]
        for flag in ("isActive", "isDecommissioned"):
            value = request.query_params.get(flag)
            if value is not None:
                agents = [a for a in agents if a[flag] == (value.lower() == "true")]
        return self._page(request, agents)

    async def _network_action(self, request: Request, pending: str, final: str) -> Response:
        body = await self._json(request)
        flt = body.get("filter")
        if not isinstance(flt, dict):
            raise _Invalid("filter is required")
        selected = self._select_agents(flt)
        for agent in selected:
            # Agents already in (or moving to) the requested state are left alone, but
            # still counted: S1 reports matches, not changes.
            if agent["networkStatus"] not in (pending, final):
                agent["networkStatus"] = pending
                self._settling[agent["id"]] = (final, self.clock() + self.settle_seconds)
        return JSONResponse({"data": {"affected": len(selected)}})

    async def _disconnect(self, request: Request) -> Response:
        return await self._network_action(request, "disconnecting", "disconnected")

    async def _connect(self, request: Request) -> Response:
        return await self._network_action(request, "connecting", "connected")

    # Threats ----------------------------------------------------------------------------
    @staticmethod
    def _created(threat: dict[str, Any]) -> datetime:
        try:
            return datetime.fromisoformat(str(threat["threatInfo"]["createdAt"]))
        except (KeyError, TypeError, ValueError):
            return datetime.min.replace(tzinfo=UTC)  # a malformed seed sorts first

    def _select_threats(self, flt: dict[str, Any]) -> list[dict[str, Any]]:
        threats = list(self.threats)
        ids = flt.get("ids")
        if ids is not None:
            threats = [t for t in threats if t["id"] in {str(i) for i in ids}]
        return threats

    async def _list_threats(self, request: Request) -> Response:
        threats = sorted(self.threats, key=self._created)
        if request.query_params.get("sortOrder") == "desc":
            threats.reverse()
        for name in ("ids", "agentIds", "contentHashes"):
            wanted = _csv(request, name)
            if wanted is None:
                continue
            wanted_lower = {w.lower() for w in wanted}
            threats = [t for t in threats if wanted_lower & self._threat_keys(t, name)]
        comparisons: dict[str, Callable[[datetime, datetime], bool]] = {
            "createdAt__gt": operator.gt,
            "createdAt__gte": operator.ge,
            "createdAt__lt": operator.lt,
        }
        for name, keep in comparisons.items():
            raw = request.query_params.get(name)
            if raw is None:
                continue
            try:
                bound = datetime.fromisoformat(raw)
            except ValueError as exc:
                raise _Invalid(f"{name} is not a timestamp") from exc
            threats = [t for t in threats if keep(self._created(t), bound)]
        resolved = request.query_params.get("resolved")
        if resolved is not None:
            want = resolved.lower() == "true"
            threats = [
                t for t in threats if (t["threatInfo"].get("incidentStatus") == "resolved") == want
            ]
        return self._page(request, threats)

    @staticmethod
    def _threat_keys(threat: dict[str, Any], name: str) -> set[str]:
        info = threat.get("threatInfo") or {}
        if name == "ids":
            return {str(threat["id"]).lower()}
        if name == "agentIds":
            realtime = threat.get("agentRealtimeInfo") or {}
            return {str(realtime.get("agentId", "")).lower()}
        return {str(info[k]).lower() for k in ("sha1", "sha256", "md5") if info.get(k)}

    async def _mitigate(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in MITIGATIONS:
            raise _Invalid(f"unknown mitigation action {action!r}")
        body = await self._json(request)
        flt = body.get("filter")
        if not isinstance(flt, dict):
            raise _Invalid("filter is required")
        selected = self._select_threats(flt)
        stamp = _iso(datetime.now(UTC))
        for threat in selected:
            threat.setdefault("mitigationStatus", []).append(
                {"action": action, "status": "success", "lastUpdate": stamp}
            )
            if action in ("kill", "quarantine", "remediate"):
                threat["threatInfo"]["mitigationStatus"] = "mitigated"
        return JSONResponse({"data": {"affected": len(selected)}})

    # Blocklist --------------------------------------------------------------------------
    async def _list_blocklist(self, request: Request) -> Response:
        items = list(self.blocklist.values())
        kind = request.query_params.get("type")
        if kind is not None:
            items = [i for i in items if i["type"] == kind]
        value = request.query_params.get("value")
        if value is not None:
            items = [i for i in items if i["value"].lower() == value.lower()]
        ids = _csv(request, "ids")
        if ids is not None:
            items = [i for i in items if i["id"] in ids]
        os_types = _csv(request, "osTypes")
        if os_types is not None:
            items = [i for i in items if i["osType"] in os_types]
        if request.query_params.get("tenant", "").lower() == "true":
            items = [i for i in items if i["scope"] == {"tenant": True}]
        return self._page(request, [self._public(i) for i in items])

    @staticmethod
    def _public(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k != "scope"}

    async def _add_blocklist(self, request: Request) -> Response:
        body = await self._json(request)
        data, flt = body.get("data"), body.get("filter")
        if not isinstance(data, dict):
            raise _Invalid("data is required")
        if not isinstance(flt, dict) or not any(
            flt.get(k) for k in ("tenant", "siteIds", "accountIds", "groupIds")
        ):
            raise _Invalid("filter must name tenant, siteIds, accountIds or groupIds")
        if data.get("type") != "black_hash":
            raise _Invalid("this simulator keeps hash blocklist items only (type black_hash)")
        value = data.get("value")
        if not isinstance(value, str) or not _HASH.match(value):
            raise _Invalid("value must be a SHA-1 (or SHA-256) hex digest")
        if data.get("osType") not in OS_TYPES:
            raise _Invalid(f"osType must be one of {sorted(OS_TYPES)}")
        for item in self.blocklist.values():
            if (
                item["value"] == value.lower()
                and item["osType"] == data["osType"]
                and item["scope"] == flt
            ):
                return _errors(409, 4090010, "Already Exists", "Blocklist item already exists")
        stamp = _iso(datetime.now(UTC))
        item = {
            "id": self._new_id(),
            "type": "black_hash",
            "value": value.lower(),
            "osType": data["osType"],
            "description": data.get("description"),
            "source": data.get("source", "user"),
            "createdAt": stamp,
            "updatedAt": stamp,
            "scopeName": "Global" if flt.get("tenant") else None,
            "scope": dict(flt),
        }
        self.blocklist[item["id"]] = item
        return JSONResponse({"data": [self._public(item)]})

    async def _delete_blocklist(self, request: Request) -> Response:
        body = await self._json(request)
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("ids"), list):
            raise _Invalid("data.ids is required")
        affected = 0
        for item_id in data["ids"]:
            if self.blocklist.pop(str(item_id), None) is not None:
                affected += 1
        return JSONResponse({"data": {"affected": affected}})


# [U] The simulator understands only the one S1QL shape stanch sends (one field, one
# quoted value); any other query is a 400, the strictest reading of an invalid query.
_DV_QUERY = re.compile(r'^(?P<field>SHA256|MD5|DstIP|DNSRequest) = "(?P<value>[0-9A-Za-z.\-]+)"$')
_DV_KINDS = {"SHA256": "sha256", "MD5": "md5", "DstIP": "ipv4", "DNSRequest": "domain"}
_DV_EVENT_TYPES = {"sha256": "File Creation", "md5": "File Creation"}


def _dv_time(value: object, name: str) -> datetime:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{name} is required")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Invalid(f"{name} is not an ISO 8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
