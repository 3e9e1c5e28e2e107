"""A stateful imitation of the Defender for Endpoint API and its Entra token endpoint.

One app serves both hosts (routes differ by path). Machine actions move ``Pending`` ->
``InProgress`` -> ``Succeeded`` over ``settle_seconds``; body keys are case-sensitive.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Handler, Simulator

MDE_SCOPES = frozenset(
    {
        "https://api.securitycenter.microsoft.com/.default",
        "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
    }
)
ISOLATION_TYPES = frozenset({"Full", "Selective", "UnManagedDevice"})
INDICATOR_TYPES = frozenset(
    {"FileSha1", "FileMd5", "CertificateThumbprint", "FileSha256", "IpAddress", "DomainName", "Url"}
)
INDICATOR_ACTIONS = frozenset(
    {"Alert", "Warn", "Block", "Audit", "BlockAndRemediate", "AlertAndBlock", "Allowed"}
)
_HASH_LENGTH = {"FileSha1": 40, "FileMd5": 32, "FileSha256": 64}
_FAMILY = {"Isolate": "isolation", "Unisolate": "isolation"}
_MAX_TOP = 10_000
# [U] MDE runs any KQL; the simulator understands only the one hunting shape stanch
# sends (table, time bound, one equality, summarize) and answers anything else 400, the
# strictest reading of "the query is invalid".
_HUNT_QUERY = re.compile(
    r"^(?P<table>DeviceFileEvents|DeviceNetworkEvents)"
    r" \| where Timestamp > datetime\((?P<since>[0-9T:\-]+Z)\)"
    r" \| where (?P<column>SHA256|MD5|RemoteIP|RemoteUrl) (?P<op>==|=~)"
    r" \"(?P<value>[0-9A-Za-z.\-]+)\""
    r" \| summarize FirstSeen = min\(Timestamp\), LastSeen = max\(Timestamp\)"
    r" by DeviceId, DeviceName$"
)
_HUNT_KINDS = {
    ("DeviceFileEvents", "SHA256"): "sha256",
    ("DeviceFileEvents", "MD5"): "md5",
    ("DeviceNetworkEvents", "RemoteIP"): "ipv4",
    ("DeviceNetworkEvents", "RemoteUrl"): "domain",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "target": str(uuid.uuid4())}}
    return JSONResponse(body, status_code=status, headers=headers)


def _not_found(kind: str, request: Request) -> Response:
    return _error(404, "ResourceNotFound", f"{kind} {request.path_params['id']} was not found")


class _ODataError(ValueError):
    pass


_TOKEN = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^\s()']+))")
_OPS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


def _parse_filter(text: str, fields: frozenset[str]) -> list[tuple[str, str, object]]:
    """The subset of OData ``$filter`` MDE clients use: ``field op literal`` joined by ``and``."""
    tokens: list[object] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position:].strip():
                raise _ODataError(f"cannot parse $filter near {text[position:]!r}")
            break
        quoted, word = match.groups()
        tokens.append(quoted.replace("''", "'") if quoted is not None else _Word(word))
        position = match.end()
    clauses = []
    index = 0
    while index < len(tokens):
        try:
            name, op, literal = tokens[index : index + 3]
        except ValueError as exc:
            raise _ODataError("incomplete $filter clause") from exc
        if not isinstance(name, _Word) or not isinstance(op, _Word) or op.text not in _OPS:
            raise _ODataError("expected '<property> <operator> <value>'")
        if name.text not in fields:
            raise _ODataError(f"property {name.text!r} cannot be filtered on")
        clauses.append((name.text, op.text, _literal(literal)))
        index += 3
        if index < len(tokens):
            joiner = tokens[index]
            if not isinstance(joiner, _Word) or joiner.text != "and":
                raise _ODataError("only 'and' joins $filter clauses here")
            index += 1
    return clauses


@dataclass(frozen=True)
class _Word:
    text: str


def _literal(token: object) -> object:
    if isinstance(token, str):
        return token
    assert isinstance(token, _Word)
    if token.text in ("true", "false"):
        return token.text == "true"
    try:
        return _to_time(token.text)
    except ValueError:
        pass
    try:
        return float(token.text)
    except ValueError as exc:
        raise _ODataError(f"bad literal {token.text!r}") from exc


def _to_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _matches(item: dict[str, Any], clauses: list[tuple[str, str, object]]) -> bool:
    for name, op, literal in clauses:
        value: object = item.get(name)
        if isinstance(literal, datetime):
            if not isinstance(value, str):
                return False
            value = _to_time(value)
        if value is None:
            if op == "ne":
                continue
            return False
        try:
            outcome = {
                "eq": lambda a, b: a == b,
                "ne": lambda a, b: a != b,
                "gt": lambda a, b: a > b,
                "ge": lambda a, b: a >= b,
                "lt": lambda a, b: a < b,
                "le": lambda a, b: a <= b,
            }[op](value, literal)
        except TypeError:
            return False
        if not outcome:
            return False
    return True


@dataclass
class _Action:
    id: str
    type: str
    machine_id: str
    scope: str | None
    comment: str
    requestor: str
    created_at: datetime
    started: float
    related_file: dict[str, str] | None = None
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class DefenderSimulator(Simulator):
    """The MDE API and its token endpoint, in memory.

    Args:
        settle_seconds: how long a machine action takes: ``Pending`` for the first half,
            ``InProgress`` for the second, then ``Succeeded``.
        rate_limit_per_minute: answer 429 with ``Retry-After`` beyond this many API calls
            in a sliding minute (``None``: no limit).
        duplicate_action: [U] MDE documents two answers to an action requested while the
            same one is pending: HTTP 400 "Action is already in progress" (``refused``,
            the default) or the pending MachineAction itself (``returned``).
        clock: monotonic time source.
    """

    vendor = "defender"
    base_url = "https://defender.sim.invalid"
    login_url = "https://defender.sim.invalid"
    tenant_id = "5e3a1b7c-0000-4000-8000-00000000defe"
    client_id = "stanch-lab-defender"
    client_secret = "stanch-lab-defender-secret"  # noqa: S105 - lab credential, not a secret
    token_lifetime = 3599

    def __init__(
        self,
        *,
        settle_seconds: float = 0.5,
        rate_limit_per_minute: int | None = None,
        duplicate_action: Literal["refused", "returned"] = "refused",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.duplicate_action = duplicate_action
        self.settle_seconds = settle_seconds
        self.rate_limit_per_minute = rate_limit_per_minute
        self.clock = clock
        self.machines: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, _Action] = {}
        self.alerts: list[dict[str, Any]] = []
        self.indicators: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, float] = {}
        self.offline: set[str] = set()
        self._calls: deque[float] = deque()
        self._last_created: datetime | None = None
        self._indicator_seq = 0
        super().__init__()

    # Seeding ----------------------------------------------------------------------------
    def add_host(
        self,
        hostname: str,
        *,
        platform: str = "Windows10",
        local_ip: str | None = None,
        external_ip: str | None = None,
    ) -> str:
        """Onboard a machine; returns its id. MDE keeps DNS names in lower case."""
        machine_id = secrets.token_hex(20)
        now = _iso(datetime.now(UTC))
        self.machines[machine_id] = {
            "id": machine_id,
            "computerDnsName": hostname.lower(),
            "firstSeen": now,
            "lastSeen": now,
            "osPlatform": platform,
            "version": "22H2",
            "osProcessor": "x64",
            "osBuild": 19045,
            "lastIpAddress": local_ip,
            "lastExternalIpAddress": external_ip,
            "healthStatus": "Active",
            "onboardingStatus": "Onboarded",
            "rbacGroupId": 0,
            "rbacGroupName": None,
            "riskScore": "None",
            "exposureLevel": "Low",
            "isAadJoined": False,
            "aadDeviceId": None,
            "machineTags": [],
        }
        return machine_id

    def add_alert(self, payload: dict[str, Any]) -> str:
        """Store an alert as ``GET /api/alerts`` returns it; returns its id."""
        alert = copy.deepcopy(payload)
        alert.setdefault("id", f"da{secrets.randbelow(10**18):018d}_{secrets.randbelow(10**9)}")
        alert.setdefault("alertCreationTime", _iso(datetime.now(UTC)))
        self.alerts.append(alert)
        return str(alert["id"])

    def seed_fleet(self) -> list[str]:
        """The lab fleet and its sightings (see :meth:`Simulator.seed_fleet`)."""
        return self._seed_edr_fleet()

    def set_offline(self, machine_id: str, offline: bool = True) -> None:
        """An offline machine never picks up its actions: they stay ``Pending``."""
        if offline:
            self.offline.add(machine_id)
        else:
            self.offline.discard(machine_id)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (as a secret rotation would)."""
        self.tokens.clear()

    def is_isolated(self, machine_id: str) -> bool:
        """Whether the latest succeeded Isolate/Unisolate for the machine is an Isolate."""
        done = [
            a
            for a in self.actions.values()
            if a.machine_id == machine_id and a.type in _FAMILY and self._status(a) == "Succeeded"
        ]
        return bool(done) and max(done, key=lambda a: a.created_at).type == "Isolate"

    # Plumbing ---------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        api = self._api
        return [
            Route("/{tenantId}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route("/api/machines", api(self._list_machines), methods=["GET"]),
            Route("/api/machines/{id}", api(self._get_machine), methods=["GET"]),
            Route("/api/machines/{id}/isolate", api(self._isolate), methods=["POST"]),
            Route("/api/machines/{id}/unisolate", api(self._unisolate), methods=["POST"]),
            Route("/api/machines/{id}/runAntiVirusScan", api(self._scan), methods=["POST"]),
            Route(
                "/api/machines/{id}/StopAndQuarantineFile",
                api(self._stop_and_quarantine),
                methods=["POST"],
            ),
            Route("/api/machineactions", api(self._list_actions), methods=["GET"]),
            Route("/api/machineactions/{id}", api(self._get_action), methods=["GET"]),
            Route("/api/machineactions/{id}/cancel", api(self._cancel), methods=["POST"]),
            Route("/api/alerts", api(self._list_alerts), methods=["GET"]),
            Route("/api/alerts/{id}", api(self._get_alert), methods=["GET"]),
            Route("/api/indicators", api(self._list_indicators), methods=["GET"]),
            Route("/api/indicators", api(self._submit_indicator), methods=["POST"]),
            Route("/api/indicators/{id}", api(self._delete_indicator), methods=["DELETE"]),
            Route("/api/advancedqueries/run", api(self._advanced_query), methods=["POST"]),
        ]

    def _api(self, handler: Handler) -> Handler:
        """Bearer check, then the per-app rate limit, then the handler."""

        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            expiry = self.tokens.get(token)
            if scheme.lower() != "bearer" or expiry is None or expiry <= self.clock():
                return _error(401, "Unauthorized", "Authorization token is missing or invalid")
            if self.rate_limit_per_minute is not None:
                now = self.clock()
                while self._calls and self._calls[0] <= now - 60:
                    self._calls.popleft()
                if len(self._calls) >= self.rate_limit_per_minute:
                    wait = max(1, math.ceil(self._calls[0] + 60 - now))
                    return _error(
                        429,
                        "TooManyRequests",
                        "API calls quota exceeded! Maximum allowed calls per minute exceeded",
                        headers={"Retry-After": str(wait)},
                    )
                self._calls.append(now)
            try:
                return await handler(request)
            except _ODataError as exc:
                return _error(400, "ODataError", str(exc))

        return endpoint

    @staticmethod
    def _page(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            top = int(request.query_params.get("$top", _MAX_TOP))
            skip = int(request.query_params.get("$skip", 0))
        except ValueError as exc:
            raise _ODataError("$top and $skip must be integers") from exc
        if not 0 < top <= _MAX_TOP or skip < 0:
            raise _ODataError(f"$top must be 1..{_MAX_TOP} and $skip >= 0")
        return items[skip : skip + top]

    @staticmethod
    def _filtered(
        request: Request, items: list[dict[str, Any]], fields: frozenset[str]
    ) -> list[dict[str, Any]]:
        text = request.query_params.get("$filter")
        if not text:
            return items
        clauses = _parse_filter(text, fields)
        return [item for item in items if _matches(item, clauses)]

    @staticmethod
    async def _body(
        request: Request, *, allowed: frozenset[str], required: frozenset[str]
    ) -> dict[str, Any] | Response:
        """The JSON body, or the 400 MDE gives; parameter names are case-sensitive."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "InvalidRequestBody", "Request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "InvalidRequestBody", "Request body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            return _error(
                400,
                "InvalidRequestBody",
                f"Unknown parameter(s) {unknown}; names are case-sensitive",
            )
        missing = sorted(k for k in required if body.get(k) in (None, ""))
        if missing:
            return _error(400, "MissingRequiredParameter", f"Missing parameter(s) {missing}")
        return body

    # Token ------------------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        if request.path_params["tenantId"] != self.tenant_id:
            return JSONResponse(
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS90002: Tenant not found.",
                },
                status_code=400,
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "AADSTS70003"},
                status_code=400,
            )
        if form.get("client_id") != self.client_id:
            return JSONResponse(
                {
                    "error": "unauthorized_client",
                    "error_description": "AADSTS700016: Application not found in the directory.",
                },
                status_code=400,
            )
        if form.get("client_secret") != self.client_secret:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status_code=401,
            )
        if form.get("scope") not in MDE_SCOPES:
            return JSONResponse(
                {"error": "invalid_scope", "error_description": "AADSTS70011: invalid scope."},
                status_code=400,
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.clock() + self.token_lifetime
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            }
        )

    # Machines ---------------------------------------------------------------------------
    _MACHINE_FIELDS = frozenset(
        {
            "computerDnsName",
            "id",
            "version",
            "aadDeviceId",
            "lastSeen",
            "exposureLevel",
            "onboardingStatus",
            "lastIpAddress",
            "healthStatus",
            "osPlatform",
            "riskScore",
            "rbacGroupId",
        }
    )

    def _machine(self, key: str) -> dict[str, Any] | None:
        if key in self.machines:
            return self.machines[key]
        for machine in self.machines.values():
            if machine["computerDnsName"] == key.lower():
                return machine
        return None

    async def _list_machines(self, request: Request) -> Response:
        if not self.machines:
            return _error(404, "ResourceNotFound", "No recent machines found")
        items = self._filtered(request, list(self.machines.values()), self._MACHINE_FIELDS)
        return JSONResponse(
            {
                "@odata.context": f"{self.base_url}/api/$metadata#Machines",
                "value": self._page(request, items),
            }
        )

    async def _get_machine(self, request: Request) -> Response:
        machine = self._machine(request.path_params["id"])
        if machine is None:
            return _not_found("Machine", request)
        return JSONResponse(machine)

    # Machine actions --------------------------------------------------------------------
    def _status(self, action: _Action) -> str:
        if action.cancelled:
            return "Cancelled"
        if action.machine_id in self.offline:
            return "Pending"
        elapsed = self.clock() - action.started
        if elapsed >= self.settle_seconds:
            return "Succeeded"
        return "Pending" if elapsed < self.settle_seconds / 2 else "InProgress"

    def _render(self, action: _Action, *, status: str | None = None) -> dict[str, Any]:
        status = status or self._status(action)
        updated = action.created_at
        if status == "InProgress":
            updated += timedelta(seconds=self.settle_seconds / 2)
        elif status == "Succeeded":
            updated += timedelta(seconds=self.settle_seconds)
        machine = self.machines[action.machine_id]
        return {
            "id": action.id,
            "type": action.type,
            "scope": action.scope,
            "requestor": action.requestor,
            "requestorComment": action.comment,
            "status": status,
            "machineId": action.machine_id,
            "computerDnsName": machine["computerDnsName"],
            "creationDateTimeUtc": _iso(action.created_at),
            "lastUpdateDateTimeUtc": _iso(updated),
            "relatedFileInfo": action.related_file,
            **action.extra,
        }

    def _in_flight(self, machine_id: str, action_type: str) -> _Action | None:
        family = _FAMILY.get(action_type, action_type)
        for action in self.actions.values():
            if (
                action.machine_id == machine_id
                and _FAMILY.get(action.type, action.type) == family
                and self._status(action) in ("Pending", "InProgress")
            ):
                return action
        return None

    def _create(
        self,
        machine_id: str,
        action_type: str,
        comment: str,
        *,
        scope: str | None = None,
        related_file: dict[str, str] | None = None,
    ) -> Response:
        pending = self._in_flight(machine_id, action_type)
        if pending is not None and self.duplicate_action == "returned":
            return JSONResponse(self._render(pending), status_code=201)
        if pending is not None:
            return _error(400, "ActiveRequestAlreadyExists", "Action is already in progress")
        created = datetime.now(UTC)
        if self._last_created is not None and created <= self._last_created:
            # Keep creation times strictly increasing so "latest action" is well defined.
            created = self._last_created + timedelta(microseconds=1)
        self._last_created = created
        action = _Action(
            id=str(uuid.uuid4()),
            type=action_type,
            machine_id=machine_id,
            scope=scope,
            comment=comment,
            requestor=self.client_id,
            created_at=created,
            started=self.clock(),
            related_file=related_file,
        )
        self.actions[action.id] = action
        # Documented: the action is returned as created, i.e. Pending.
        return JSONResponse(self._render(action, status="Pending"), status_code=201)

    async def _machine_action(
        self,
        request: Request,
        action_type: str,
        *,
        allowed: frozenset[str],
        required: frozenset[str],
        scope_key: str | None = None,
        scopes: frozenset[str] = frozenset(),
        default_scope: str | None = None,
    ) -> Response:
        machine = self._machine(request.path_params["id"])
        if machine is None:
            return _not_found("Machine", request)
        body = await self._body(request, allowed=allowed, required=required)
        if isinstance(body, Response):
            return body
        scope = default_scope
        if scope_key is not None and scope_key in body:
            scope = body[scope_key]
            if scope not in scopes:
                return _error(400, "InvalidInput", f"{scope_key} must be one of {sorted(scopes)}")
        related = None
        if "Sha1" in body:
            sha1 = str(body["Sha1"])
            if not re.fullmatch(r"[0-9a-fA-F]{40}", sha1):
                return _error(400, "InvalidHashValue", "Sha1 is not a valid SHA-1")
            related = {"fileIdentifier": sha1.lower(), "fileIdentifierType": "Sha1"}
        return self._create(
            machine["id"], action_type, str(body["Comment"]), scope=scope, related_file=related
        )

    async def _isolate(self, request: Request) -> Response:
        return await self._machine_action(
            request,
            "Isolate",
            allowed=frozenset({"Comment", "IsolationType"}),
            required=frozenset({"Comment"}),
            scope_key="IsolationType",
            scopes=ISOLATION_TYPES,
            default_scope="Full",
        )

    async def _unisolate(self, request: Request) -> Response:
        return await self._machine_action(
            request, "Unisolate", allowed=frozenset({"Comment"}), required=frozenset({"Comment"})
        )

    async def _scan(self, request: Request) -> Response:
        return await self._machine_action(
            request,
            "RunAntiVirusScan",
            allowed=frozenset({"Comment", "ScanType"}),
            required=frozenset({"Comment"}),
            scope_key="ScanType",
            scopes=frozenset({"Quick", "Full"}),
            default_scope="Quick",
        )

    async def _stop_and_quarantine(self, request: Request) -> Response:
        return await self._machine_action(
            request,
            "StopAndQuarantineFile",
            allowed=frozenset({"Comment", "Sha1"}),
            required=frozenset({"Comment", "Sha1"}),
        )

    _ACTION_FIELDS = frozenset(
        {"id", "status", "machineId", "type", "requestor", "creationDateTimeUtc"}
    )

    async def _list_actions(self, request: Request) -> Response:
        rendered = [self._render(a) for a in self.actions.values()]
        items = self._filtered(request, rendered, self._ACTION_FIELDS)
        return JSONResponse(
            {
                "@odata.context": f"{self.base_url}/api/$metadata#MachineActions",
                "value": self._page(request, items),
            }
        )

    async def _get_action(self, request: Request) -> Response:
        action = self.actions.get(request.path_params["id"])
        if action is None:
            return _not_found("Machine action", request)
        return JSONResponse(self._render(action))

    async def _cancel(self, request: Request) -> Response:
        action = self.actions.get(request.path_params["id"])
        if action is None:
            return _not_found("Machine action", request)
        body = await self._body(
            request, allowed=frozenset({"Comment"}), required=frozenset({"Comment"})
        )
        if isinstance(body, Response):
            return body
        if self._status(action) not in ("Pending", "InProgress"):
            return _error(400, "InvalidInput", "Only actions that are not final can be cancelled")
        action.cancelled = True
        action.extra = {
            "cancellationRequestor": self.client_id,
            "cancellationComment": body["Comment"],
            "cancellationDateTimeUtc": _iso(datetime.now(UTC)),
        }
        return JSONResponse(self._render(action))

    # Alerts -----------------------------------------------------------------------------
    _ALERT_FIELDS = frozenset(
        {
            "alertCreationTime",
            "lastUpdateTime",
            "incidentId",
            "InvestigationId",
            "id",
            "assignedTo",
            "detectionSource",
            "lastEventTime",
            "status",
            "severity",
            "category",
        }
    )

    @staticmethod
    def _expand(request: Request, alert: dict[str, Any]) -> dict[str, Any]:
        # Evidence is only returned when asked for with $expand=evidence.
        if request.query_params.get("$expand") == "evidence":
            return alert
        return {k: v for k, v in alert.items() if k != "evidence"}

    async def _list_alerts(self, request: Request) -> Response:
        ordered = sorted(self.alerts, key=lambda a: _to_time(str(a["alertCreationTime"])))
        items = self._filtered(request, ordered, self._ALERT_FIELDS)
        page = [self._expand(request, a) for a in self._page(request, items)]
        return JSONResponse(
            {"@odata.context": f"{self.base_url}/api/$metadata#Alerts", "value": page}
        )

    async def _get_alert(self, request: Request) -> Response:
        for alert in self.alerts:
            if alert["id"] == request.path_params["id"]:
                return JSONResponse(self._expand(request, alert))
        return _error(404, "ResourceNotFound", f"Alert {request.path_params['id']} was not found")

    # Indicators -------------------------------------------------------------------------
    _INDICATOR_FIELDS = frozenset(
        {
            "application",
            "createdByDisplayName",
            "expirationTime",
            "generateAlert",
            "title",
            "rbacGroupNames",
            "rbacGroupIds",
            "indicatorValue",
            "indicatorType",
            "creationTimeDateTimeUtc",
            "createdBy",
            "action",
            "severity",
        }
    )
    _INDICATOR_KEYS = frozenset(
        {
            "indicatorValue",
            "indicatorType",
            "action",
            "title",
            "description",
            "application",
            "expirationTime",
            "severity",
            "recommendedActions",
            "rbacGroupNames",
            "educateUrl",
            "generateAlert",
        }
    )

    async def _list_indicators(self, request: Request) -> Response:
        items = self._filtered(request, list(self.indicators.values()), self._INDICATOR_FIELDS)
        return JSONResponse(
            {
                "@odata.context": f"{self.base_url}/api/$metadata#Indicators",
                "value": self._page(request, items),
            }
        )

    async def _submit_indicator(self, request: Request) -> Response:
        body = await self._body(
            request,
            allowed=self._INDICATOR_KEYS,
            required=frozenset(
                {"indicatorValue", "indicatorType", "action", "title", "description"}
            ),
        )
        if isinstance(body, Response):
            return body
        kind, value = body["indicatorType"], str(body["indicatorValue"])
        if kind not in INDICATOR_TYPES:
            return _error(
                400, "InvalidInput", f"indicatorType must be one of {sorted(INDICATOR_TYPES)}"
            )
        if body["action"] not in INDICATOR_ACTIONS:
            return _error(400, "InvalidInput", f"action must be one of {sorted(INDICATOR_ACTIONS)}")
        length = _HASH_LENGTH.get(kind)
        if length is not None:
            if not re.fullmatch(rf"[0-9a-fA-F]{{{length}}}", value):
                return _error(400, "InvalidHashValue", f"{value} is not a valid {kind}")
            value = value.lower()
        # Submit is an upsert keyed on value and type.
        existing = next(
            (
                i
                for i in self.indicators.values()
                if i["indicatorValue"] == value and i["indicatorType"] == kind
            ),
            None,
        )
        if existing is None:
            self._indicator_seq += 1
            existing = {
                "id": str(self._indicator_seq),
                "creationTimeDateTimeUtc": _iso(datetime.now(UTC)),
                "createdBy": self.client_id,
                "createdBySource": "PublicApi",
            }
            self.indicators[existing["id"]] = existing
        existing.update({k: v for k, v in body.items()}, indicatorValue=value)
        existing["lastUpdateTime"] = _iso(datetime.now(UTC))
        return JSONResponse(existing)

    # Advanced hunting -------------------------------------------------------------------
    async def _advanced_query(self, request: Request) -> Response:
        """``{"Query": <KQL>}`` to ``{"Schema", "Results", "Stats"}``, synchronously.

        Documented: data from the last 30 days only; a query over a column of the wrong
        table is invalid.
        """
        query = frozenset({"Query"})
        body = await self._body(request, allowed=query, required=query)
        if isinstance(body, Response):
            return body
        match = _HUNT_QUERY.fullmatch(str(body["Query"]))
        kind = _HUNT_KINDS.get((match["table"], match["column"])) if match else None
        if match is None or kind is None:
            return _error(400, "BadRequest", "Query is invalid or not supported by the simulator")
        since = max(_to_time(match["since"]), datetime.now(UTC) - timedelta(days=30))
        by_device: dict[str, list[datetime]] = {}
        for sighting in self.sightings_of(kind, match["value"], since):
            by_device.setdefault(sighting.host_id, []).append(sighting.at)
        rows = [
            {
                "DeviceId": machine_id,
                "DeviceName": self.machines[machine_id]["computerDnsName"],
                "FirstSeen": _iso(min(times)),
                "LastSeen": _iso(max(times)),
            }
            for machine_id, times in by_device.items()
            if machine_id in self.machines
        ]
        return JSONResponse(
            {
                "Schema": [
                    {"Name": "DeviceId", "Type": "String"},
                    {"Name": "DeviceName", "Type": "String"},
                    {"Name": "FirstSeen", "Type": "DateTime"},
                    {"Name": "LastSeen", "Type": "DateTime"},
                ],
                "Results": rows,
                "Stats": {"ExecutionTime": 0.01, "resource_usage": {"cache": {}}},
            }
        )

    async def _delete_indicator(self, request: Request) -> Response:
        if self.indicators.pop(request.path_params["id"], None) is None:
            return _not_found("Indicator", request)
        return Response(status_code=204)
