"""A stateful imitation of the identity platform token endpoint and the Graph routes stanch uses.

One app serves both hosts: ``/{tenant}/oauth2/v2.0/token`` (login.microsoftonline.com)
and ``/v1.0/...`` (graph.microsoft.com), so one transport carries a whole adapter.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

API = "/v1.0"
GRAPH = "https://graph.microsoft.com/v1.0"
TOKEN_LIFETIME = 3599
# The well-known id Graph gives every user's password method (not a secret).
PASSWORD_METHOD_ID = "28c10230-6103-485e-b985-444c60001490"  # noqa: S105
PHONE_METHOD_IDS = {
    "mobile": "3179e48a-750b-4051-897c-87b9720928f7",
    "alternateMobile": "b6332ec1-7057-4abe-9331-3d72feddfe41",
    "office": "e37fc753-ff3b-4958-9484-eaa9425c82bc",
}
USER_DEFAULT_PROPERTIES = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
RISK_ORDER = ("none", "hidden", "low", "medium", "high")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GraphError(Exception):
    """A handler's way of answering with Graph's error envelope."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _not_found(what: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{what}' does not exist or one of its queried reference-property "
        "objects are not present.",
    )


def _bad_request(message: str) -> GraphError:
    return GraphError(400, "Request_BadRequest", message)


@dataclass
class SimUser:
    """One directory user and the state the adapter can change."""

    id: str
    user_principal_name: str
    display_name: str
    mail: str | None
    account_enabled: bool
    sessions: int = 0
    sign_in_sessions_valid_from: str = field(default_factory=_now)
    force_change_password_next_sign_in: bool = False
    methods: list[dict[str, Any]] = field(default_factory=list)

    def resource(self) -> dict[str, Any]:
        """The Graph ``user`` resource (every property the simulator knows)."""
        return {
            "id": self.id,
            "userPrincipalName": self.user_principal_name,
            "displayName": self.display_name or None,
            "mail": self.mail,
            "accountEnabled": self.account_enabled,
            "businessPhones": [],
            "givenName": None,
            "surname": None,
            "jobTitle": None,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "signInSessionsValidFromDateTime": self.sign_in_sessions_valid_from,
        }


class EntraSimulator(Simulator):
    """Microsoft Entra ID as Graph shows it to an app with client credentials.

    Args:
        revoke_returns_204: answer ``revokeSignInSessions`` with 204 instead of the
            documented 200 ``{"value": true}`` (some tenants do).
        rate_limit_per_minute: Graph requests allowed per sliding minute; beyond it, 429
            with ``Retry-After`` in seconds.
        identity_protection_rps_limit: ``/identityProtection`` requests allowed per
            sliding second; beyond it, 429 **without** ``Retry-After``, as Graph does.
        password_change_while_disabled: [U] Graph does not say whether
            ``passwordProfile.forceChangePasswordNextSignIn`` may be set on a disabled
            account. By default the simulator refuses (400), the stricter reading;
            ``True`` accepts it.
        clock: monotonic seconds, injectable so throttling tests are deterministic.
    """

    vendor = "entra"
    base_url = GRAPH
    TENANT_ID = "5a1ab000-0000-4000-8000-00000000e17a"
    TENANT_DOMAIN = "stanchlab.onmicrosoft.com"
    CLIENT_ID = "c11e0000-0000-4000-8000-0000005a1ab0"
    CLIENT_SECRET = "lab~entra~client~secret"  # noqa: S105 - the simulator's public lab secret

    def __init__(
        self,
        *,
        revoke_returns_204: bool = False,
        rate_limit_per_minute: int | None = None,
        identity_protection_rps_limit: int | None = None,
        password_change_while_disabled: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.revoke_returns_204 = revoke_returns_204
        self.password_change_while_disabled = password_change_while_disabled
        self.rate_limit_per_minute = rate_limit_per_minute
        self.identity_protection_rps_limit = identity_protection_rps_limit
        self._clock = clock
        self.users: dict[str, SimUser] = {}
        self.risky_users: dict[str, dict[str, Any]] = {}
        self.risk_detections: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, float] = {}
        self._graph_calls: list[float] = []
        self._protection_calls: list[float] = []
        super().__init__()

    # Seeding ------------------------------------------------------------------------
    def add_user(
        self,
        user_principal_name: str,
        *,
        display_name: str = "",
        mail: str | None = None,
        enabled: bool = True,
    ) -> str:
        """Create a user with a password method; return its object id."""
        user = SimUser(
            id=str(uuid.uuid4()),
            user_principal_name=user_principal_name,
            display_name=display_name,
            mail=mail,
            account_enabled=enabled,
        )
        user.methods.append(
            {
                "@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
                "id": PASSWORD_METHOD_ID,
                "password": None,
                "createdDateTime": _now(),
            }
        )
        self.users[user.id] = user
        return user.id

    def add_phone_method(self, user_id: str, phone_number: str, phone_type: str = "mobile") -> str:
        """Register a phone (``mobile``, ``alternateMobile`` or ``office``); return its id."""
        method_id = PHONE_METHOD_IDS[phone_type]
        self.users[user_id].methods.append(
            {
                "@odata.type": "#microsoft.graph.phoneAuthenticationMethod",
                "id": method_id,
                "phoneNumber": phone_number,
                "phoneType": phone_type,
                "smsSignInState": "notAllowedByPolicy",
            }
        )
        return method_id

    def add_authenticator_method(self, user_id: str, display_name: str = "iPhone") -> str:
        """Register a Microsoft Authenticator app; return its id."""
        method_id = str(uuid.uuid4())
        self.users[user_id].methods.append(
            {
                "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
                "id": method_id,
                "displayName": display_name,
                "deviceTag": "SoftwareTokenActivated",
                "phoneAppVersion": "6.2401.0119",
                "createdDateTime": _now(),
            }
        )
        return method_id

    def add_fido2_method(self, user_id: str, display_name: str = "Security key") -> str:
        """Register a FIDO2 key (a method the adapter must leave alone); return its id."""
        method_id = str(uuid.uuid4())
        self.users[user_id].methods.append(
            {
                "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
                "id": method_id,
                "displayName": display_name,
                "model": "YubiKey 5",
                "createdDateTime": _now(),
            }
        )
        return method_id

    def sign_in(self, user_id: str) -> bool:
        """Open a session for the user; ``False`` (no session) if the account is disabled."""
        user = self.users[user_id]
        if not user.account_enabled:
            return False
        user.sessions += 1
        return True

    def add_risk_detection(self, payload: dict[str, Any]) -> str:
        """Store a ``riskDetection`` (an ``id`` is assigned if missing); return its id.

        A detection still ``atRisk`` for a user also marks that user risky, at the highest
        level seen, as Identity Protection aggregates detections into user risk.
        """
        detection = dict(payload)
        detection.setdefault("id", uuid.uuid4().hex)
        detection.setdefault("detectedDateTime", _now())
        self.risk_detections[str(detection["id"])] = detection
        user_id = detection.get("userId")
        if isinstance(user_id, str) and detection.get("riskState") == "atRisk":
            level = str(detection.get("riskLevel") or "none")
            risky = self._risky(user_id, detection.get("userPrincipalName"))
            current = str(risky["riskLevel"])
            if RISK_ORDER.index(level if level in RISK_ORDER else "none") > RISK_ORDER.index(
                current if current in RISK_ORDER else "none"
            ):
                risky["riskLevel"] = level
            if risky["riskState"] != "confirmedCompromised":
                risky.update(riskState="atRisk", riskDetail="none")
            risky["riskLastUpdatedDateTime"] = _now()
        return str(detection["id"])

    def expire_tokens(self) -> None:
        """Invalidate every issued token (as a secret rotation would)."""
        self.tokens.clear()

    def _risky(self, user_id: str, upn: Any = None) -> dict[str, Any]:
        user = self.users.get(user_id)
        return self.risky_users.setdefault(
            user_id,
            {
                "id": user_id,
                "isDeleted": False,
                "isProcessing": False,
                "riskLastUpdatedDateTime": _now(),
                "riskLevel": "none",
                "riskState": "none",
                "riskDetail": "none",
                "userDisplayName": user.display_name if user else None,
                "userPrincipalName": user.user_principal_name if user else upn,
            },
        )

    # Routes -------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        """The token route and the Graph routes (all in ``graph.operations.json``)."""
        graph = self._graph
        return [
            Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            Route(f"{API}/users", graph(self._list_users), methods=["GET"]),
            Route(f"{API}/users/{{id}}", graph(self._get_user), methods=["GET"]),
            Route(f"{API}/users/{{id}}", graph(self._patch_user), methods=["PATCH"]),
            Route(
                f"{API}/users/{{id}}/revokeSignInSessions",
                graph(self._revoke_sessions),
                methods=["POST"],
            ),
            Route(
                f"{API}/users/{{id}}/authentication/methods",
                graph(self._list_methods),
                methods=["GET"],
            ),
            Route(
                f"{API}/users/{{id}}/authentication/microsoftAuthenticatorMethods/{{method_id}}",
                graph(self._delete_authenticator),
                methods=["DELETE"],
            ),
            Route(
                f"{API}/users/{{id}}/authentication/phoneMethods/{{method_id}}",
                graph(self._delete_phone),
                methods=["DELETE"],
            ),
            Route(
                f"{API}/identityProtection/riskyUsers",
                graph(self._list_risky_users),
                methods=["GET"],
            ),
            Route(
                f"{API}/identityProtection/riskyUsers/confirmCompromised",
                graph(self._confirm_compromised),
                methods=["POST"],
            ),
            Route(
                f"{API}/identityProtection/riskyUsers/dismiss",
                graph(self._dismiss),
                methods=["POST"],
            ),
            Route(
                f"{API}/identityProtection/riskyUsers/{{risky_user_id}}",
                graph(self._get_risky_user),
                methods=["GET"],
            ),
            Route(
                f"{API}/identityProtection/riskDetections",
                graph(self._list_detections),
                methods=["GET"],
            ),
        ]

    def _graph(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a Graph handler with bearer checking, throttling and the error envelope."""

        async def endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                self._throttle(request.url.path)
                response = await handler(request)
            except GraphError as exc:
                response = self._envelope(exc)
            response.headers["request-id"] = str(uuid.uuid4())
            return response

        return endpoint

    @staticmethod
    def _envelope(exc: GraphError) -> Response:
        body = {
            "error": {
                "code": exc.code,
                "message": exc.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": str(uuid.uuid4()),
                    "client-request-id": str(uuid.uuid4()),
                },
            }
        }
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        expires = self.tokens.get(token)
        if expires is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        if self._clock() >= expires:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )

    def _throttle(self, path: str) -> None:
        now = self._clock()
        if self.rate_limit_per_minute is not None:
            self._graph_calls = [t for t in self._graph_calls if now - t < 60]
            if len(self._graph_calls) >= self.rate_limit_per_minute:
                wait = max(1, math.ceil(self._graph_calls[0] + 60 - now))
                raise GraphError(
                    429,
                    "TooManyRequests",
                    "Too many requests. Please retry after the time in Retry-After.",
                    {
                        "Retry-After": str(wait),
                        "x-ms-throttle-information": "ResourceUnitLimitExceeded",
                    },
                )
            self._graph_calls.append(now)
        if self.identity_protection_rps_limit is not None and path.startswith(
            f"{API}/identityProtection/"
        ):
            self._protection_calls = [t for t in self._protection_calls if now - t < 1]
            if len(self._protection_calls) >= self.identity_protection_rps_limit:
                # Identity Protection's limit is per tenant and its 429s name no wait time.
                raise GraphError(429, "TooManyRequests", "Too many requests.")
            self._protection_calls.append(now)

    # Token endpoint -------------------------------------------------------------------
    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        tenant = request.path_params["tenant"]

        def oauth_error(status: int, error: str, code: int, description: str) -> Response:
            return JSONResponse(
                {
                    "error": error,
                    "error_description": f"AADSTS{code}: {description}",
                    "error_codes": [code],
                    "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                    "trace_id": str(uuid.uuid4()),
                    "correlation_id": str(uuid.uuid4()),
                },
                status_code=status,
            )

        if tenant.lower() not in (self.TENANT_ID, self.TENANT_DOMAIN):
            return oauth_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return oauth_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant."
            )
        if form.get("client_id") != self.CLIENT_ID:
            return oauth_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in "
                "the directory.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), self.CLIENT_SECRET):
            return oauth_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if form.get("scope") != "https://graph.microsoft.com/.default":
            return oauth_error(
                400,
                "invalid_scope",
                1002012,
                "Client credential flows must have a scope value with /.default suffixed "
                "to the resource identifier.",
            )
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self._clock() + TOKEN_LIFETIME
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME,
                "access_token": token,
            }
        )

    # Users ----------------------------------------------------------------------------
    def _user(self, key: str) -> SimUser:
        user = self.users.get(key)
        if user is not None:
            return user
        # {id} may also be the userPrincipalName, which Entra compares case-insensitively.
        for candidate in self.users.values():
            if candidate.user_principal_name.lower() == key.lower():
                return candidate
        raise _not_found(key)

    @staticmethod
    def _select(request: Request, resource: dict[str, Any]) -> dict[str, Any]:
        raw = request.query_params.get("$select")
        if raw is None:
            return {k: resource[k] for k in USER_DEFAULT_PROPERTIES}
        wanted = [p.strip() for p in raw.split(",") if p.strip()]
        for name in wanted:
            if name not in resource:
                raise _bad_request(
                    f"Could not find a property named '{name}' on type 'microsoft.graph.user'."
                )
        return {k: resource[k] for k in wanted}

    async def _list_users(self, request: Request) -> Response:
        users = list(self.users.values())
        raw_filter = request.query_params.get("$filter")
        if raw_filter is not None:
            match = re.fullmatch(r"userPrincipalName eq '((?:[^']|'')*)'", raw_filter.strip())
            if match is None:
                raise _bad_request("Invalid filter clause")
            upn = match.group(1).replace("''", "'").lower()
            users = [u for u in users if u.user_principal_name.lower() == upn]
        items = [self._select(request, u.resource()) for u in users]
        return self._page(request, items, context="users")

    async def _get_user(self, request: Request) -> Response:
        user = self._user(request.path_params["id"])
        body = {"@odata.context": f"{GRAPH}/$metadata#users/$entity"}
        body.update(self._select(request, user.resource()))
        return JSONResponse(body)

    async def _patch_user(self, request: Request) -> Response:
        user = self._user(request.path_params["id"])
        body = await self._json(request)
        if not isinstance(body, dict) or not body:
            raise _bad_request("Empty Payload. JSON content expected.")
        allowed = {"accountEnabled", "passwordProfile", "displayName"}
        unknown = set(body) - allowed
        if unknown:
            raise _bad_request(f"Invalid property '{sorted(unknown)[0]}'.")
        if "accountEnabled" in body and not isinstance(body["accountEnabled"], bool):
            raise _bad_request("Invalid value for property 'accountEnabled'.")
        profile = body.get("passwordProfile")
        if profile is not None and (
            not isinstance(profile, dict)
            or not isinstance(profile.get("forceChangePasswordNextSignIn", False), bool)
        ):
            raise _bad_request("Invalid value for property 'passwordProfile'.")
        enabled = body.get("accountEnabled", user.account_enabled)
        if (
            isinstance(profile, dict)
            and profile.get("forceChangePasswordNextSignIn")
            and not enabled
            and not self.password_change_while_disabled
        ):
            # [U] the stricter reading: no password change is forced on a disabled account.
            raise _bad_request("The password profile of a disabled account cannot be changed.")
        if "accountEnabled" in body:
            user.account_enabled = body["accountEnabled"]
        if isinstance(profile, dict) and "forceChangePasswordNextSignIn" in profile:
            user.force_change_password_next_sign_in = profile["forceChangePasswordNextSignIn"]
        if isinstance(body.get("displayName"), str):
            user.display_name = body["displayName"]
        return Response(status_code=204)

    async def _revoke_sessions(self, request: Request) -> Response:
        user = self._user(request.path_params["id"])
        user.sessions = 0
        user.sign_in_sessions_valid_from = _now()
        if self.revoke_returns_204:
            return Response(status_code=204)
        return JSONResponse({"@odata.context": f"{GRAPH}/$metadata#Edm.Boolean", "value": True})

    async def _list_methods(self, request: Request) -> Response:
        user = self._user(request.path_params["id"])
        return JSONResponse(
            {
                "@odata.context": f"{GRAPH}/$metadata#users('{user.id}')/authentication/methods",
                "value": user.methods,
            }
        )

    def _delete_method(self, request: Request, odata_type: str) -> Response:
        user = self._user(request.path_params["id"])
        method_id = request.path_params["method_id"]
        for method in user.methods:
            if method["id"] == method_id and method["@odata.type"] == odata_type:
                user.methods.remove(method)
                return Response(status_code=204)
        raise _not_found(method_id)

    async def _delete_authenticator(self, request: Request) -> Response:
        return self._delete_method(
            request, "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod"
        )

    async def _delete_phone(self, request: Request) -> Response:
        return self._delete_method(request, "#microsoft.graph.phoneAuthenticationMethod")

    # Identity Protection --------------------------------------------------------------
    async def _list_risky_users(self, request: Request) -> Response:
        items = list(self.risky_users.values())
        raw_filter = request.query_params.get("$filter")
        if raw_filter is not None:
            match = re.fullmatch(r"(riskLevel|riskState) eq '(\w+)'", raw_filter.strip())
            if match is None:
                raise _bad_request("Invalid filter clause")
            items = [r for r in items if r[match.group(1)] == match.group(2)]
        return self._page(request, items, context="identityProtection/riskyUsers")

    async def _get_risky_user(self, request: Request) -> Response:
        risky_user_id = request.path_params["risky_user_id"]
        risky = self.risky_users.get(risky_user_id)
        if risky is None:
            raise _not_found(risky_user_id)
        context = f"{GRAPH}/$metadata#identityProtection/riskyUsers/$entity"
        return JSONResponse({"@odata.context": context, **risky})

    async def _user_ids(self, request: Request) -> list[str]:
        body = await self._json(request)
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _bad_request("userIds must be a non-empty array of user object ids.")
        # [U] Graph's answer for an unknown id is undocumented; the simulator says 404.
        for user_id in ids:
            if user_id not in self.users:
                raise _not_found(user_id)
        return ids

    async def _confirm_compromised(self, request: Request) -> Response:
        for user_id in await self._user_ids(request):
            self._risky(user_id).update(
                riskState="confirmedCompromised",
                riskLevel="high",
                riskDetail="adminConfirmedUserCompromised",
                riskLastUpdatedDateTime=_now(),
            )
        return Response(status_code=204)

    async def _dismiss(self, request: Request) -> Response:
        for user_id in await self._user_ids(request):
            self._risky(user_id).update(
                riskState="dismissed",
                riskLevel="none",
                riskDetail="adminDismissedAllRiskForUser",
                riskLastUpdatedDateTime=_now(),
            )
        return Response(status_code=204)

    async def _list_detections(self, request: Request) -> Response:
        items = sorted(
            self.risk_detections.values(),
            key=lambda d: (_parse_time(str(d["detectedDateTime"])), str(d["id"])),
        )
        raw_filter = request.query_params.get("$filter")
        if raw_filter is not None:
            match = re.fullmatch(r"detectedDateTime (ge|gt) (\S+)", raw_filter.strip())
            if match is None:
                raise _bad_request("Invalid filter clause")
            try:
                since = _parse_time(match.group(2))
            except ValueError as exc:
                raise _bad_request(f"Invalid DateTimeOffset '{match.group(2)}'.") from exc
            if match.group(1) == "ge":
                items = [d for d in items if _parse_time(str(d["detectedDateTime"])) >= since]
            else:
                items = [d for d in items if _parse_time(str(d["detectedDateTime"])) > since]
        return self._page(
            request, items, context="identityProtection/riskDetections", default_top=20
        )

    # Helpers --------------------------------------------------------------------------
    @staticmethod
    async def _json(request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise _bad_request("Unable to read JSON request payload.") from exc

    @staticmethod
    def _page(
        request: Request,
        items: list[dict[str, Any]],
        *,
        context: str,
        default_top: int = 100,
        max_top: int = 500,
    ) -> Response:
        """One page of ``items`` with ``@odata.nextLink`` when more remain."""
        params = dict(request.query_params)
        try:
            top = int(params.get("$top", default_top))
            offset = int(params.pop("$skiptoken", "sim0").removeprefix("sim"))
        except ValueError as exc:
            raise _bad_request("Invalid $top or $skiptoken.") from exc
        if not 1 <= top <= max_top:
            raise _bad_request(f"Invalid page size specified: '{top}'. Must be 1..{max_top}.")
        body: dict[str, Any] = {
            "@odata.context": f"{GRAPH}/$metadata#{context}",
            "value": items[offset : offset + top],
        }
        if offset + top < len(items):
            params["$skiptoken"] = f"sim{offset + top}"
            query = urlencode(params, quote_via=quote, safe="$,':")
            body["@odata.nextLink"] = str(request.url.replace(query=query))
        return JSONResponse(body)


def _parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
