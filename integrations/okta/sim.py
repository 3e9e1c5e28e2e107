"""A stateful imitation of an Okta org's HTTP API: users, lifecycle, sessions, System Log.

Only documented (method, path) pairs are served (``tests/vendor_specs/okta*.json``), with
Okta's error envelope, its epoch-valued rate-limit headers and both auth schemes: the
SSWS API token and OAuth 2.0 client credentials with a ``private_key_jwt`` assertion.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import string
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

USER_STATUSES = frozenset(
    {
        "STAGED",
        "PROVISIONED",
        "ACTIVE",
        "RECOVERY",
        "PASSWORD_EXPIRED",
        "LOCKED_OUT",
        "SUSPENDED",
        "DEPROVISIONED",
    }
)
# Statuses of an activated account whose password can be expired.
_ACTIVE_FAMILY = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MAX_ASSERTION_LIFETIME = 3600  # Okta: exp at most one hour after issue
_CLOCK_SKEW = 60


def _generate_lab_key() -> str:
    # Generated per process rather than committed, so no private key lives in the repo.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


_LAB_KEY_PEM = _generate_lab_key()


def _now_iso(epoch: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if epoch is None else epoch, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(raw: str) -> float | None:
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _okta_id(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(20 - len(prefix)))


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class _User:
    id: str
    status: str
    profile: dict[str, Any]
    created: str
    status_changed: str
    last_updated: str
    sessions: int = 0
    factors: list[dict[str, Any]] = field(default_factory=list)
    password_expired: bool = False

    def body(self, base_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created": self.created,
            "activated": None if self.status in ("STAGED", "PROVISIONED") else self.created,
            "statusChanged": self.status_changed,
            "lastLogin": None,
            "lastUpdated": self.last_updated,
            "passwordChanged": self.created,
            "transitioningToStatus": None,
            "type": {"id": "otystanchlabdefault0"},
            "profile": dict(self.profile),
            "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": f"{base_url}/api/v1/users/{self.id}"}},
        }


@dataclass(order=True)
class _LogEntry:
    published: float
    seq: int
    payload: dict[str, Any] = field(compare=False)

    @property
    def key(self) -> tuple[int, int]:
        return int(self.published * 1000), self.seq

    @property
    def cursor(self) -> str:
        return "{}_{}".format(*self.key)


class OktaSimulator(Simulator):
    """An Okta org at ``https://stanch-lab.okta.com``.

    Args:
        rate_limit_per_minute: when set, every ``/api/v1`` request counts against one
            fixed one-minute window (real Okta keeps one bucket per endpoint family); past
            the limit the answer is 429 E0000047 with ``X-Rate-Limit-Limit``,
            ``X-Rate-Limit-Remaining`` and ``X-Rate-Limit-Reset`` (epoch seconds) and, as
            in Okta, no ``Retry-After``.

    The state machine follows the Users lifecycle API: suspend only from ACTIVE, unsuspend
    only from SUSPENDED, both answering 200 with an empty body, else 400 E0000001 whose
    cause reads "Cannot suspend a user that is not active" / "Cannot unsuspend a user
    that is not suspended" (the wording third-party connectors match; its exact place in
    Okta's envelope is unverified: ``suspend_refusal_in`` puts it in ``errorCauses``, the
    default, or in ``errorSummary``). Expiring the password of a user outside the active
    family (SUSPENDED, say) is refused with 403 E0000038, as documented.
    """

    vendor = "okta"
    base_url = "https://stanch-lab.okta.com"

    LAB_API_TOKEN: ClassVar[str] = "00stanch-lab-okta-ssws-token"  # noqa: S105 - lab credential
    LAB_CLIENT_ID: ClassVar[str] = "0oastanchlabservice0"
    LAB_KEY_ID: ClassVar[str] = "stanch-lab-key"
    LAB_PRIVATE_KEY_PEM: ClassVar[str] = _LAB_KEY_PEM
    LAB_SCOPES: ClassVar[frozenset[str]] = frozenset(
        {"okta.users.read", "okta.users.manage", "okta.logs.read", "okta.sessions.manage"}
    )
    TOKEN_LIFETIME_SECONDS: ClassVar[int] = 3600

    def __init__(
        self,
        *,
        rate_limit_per_minute: int | None = None,
        suspend_refusal_in: Literal["errorCauses", "errorSummary"] = "errorCauses",
        reset_factors_while_suspended: bool = False,
    ) -> None:
        # [U] Okta says reset_factors leaves the user ACTIVE and that the status limits the
        # lifecycle operations allowed, not whether a SUSPENDED user's factors can be reset:
        # refused (403 E0000038) by default, the stricter reading; True allows it.
        self.reset_factors_while_suspended = reset_factors_while_suspended
        self.rate_limit_per_minute = rate_limit_per_minute
        # [U] where the "Cannot suspend a user that is not active" text sits in the envelope.
        self.suspend_refusal_in = suspend_refusal_in
        self._state = threading.RLock()
        self._users: dict[str, _User] = {}
        self._events: list[_LogEntry] = []
        self._seq = 0
        self._tokens: dict[str, tuple[float, frozenset[str]]] = {}
        self._seen_jti: set[str] = set()
        self._window_start = 0.0
        self._window_count = 0
        private = serialization.load_pem_private_key(self.LAB_PRIVATE_KEY_PEM.encode(), None)
        assert isinstance(private, rsa.RSAPrivateKey)
        self._client_public_key = private.public_key()
        super().__init__()

    # Seeding ---------------------------------------------------------------------------
    def add_user(
        self,
        login: str,
        *,
        first_name: str = "",
        last_name: str = "",
        email: str | None = None,
        status: str = "ACTIVE",
    ) -> str:
        """Create a user directly in the org state and return its Okta id.

        Activated users get one open session and one enrolled Okta Verify factor, so
        session revocation and factor reset have something to remove.

        Raises:
            ValueError: the login is taken or the status is not an Okta user status.
        """
        if status not in USER_STATUSES:
            raise ValueError(f"status must be one of {sorted(USER_STATUSES)}")
        with self._state:
            if self._by_login(login) is not None:
                raise ValueError(f"login {login!r} already exists")
            now = _now_iso()
            user = _User(
                id=_okta_id("00u"),
                status=status,
                profile={
                    "login": login,
                    "email": email or login,
                    "firstName": first_name,
                    "lastName": last_name,
                    "displayName": f"{first_name} {last_name}".strip() or None,
                },
                created=now,
                status_changed=now,
                last_updated=now,
            )
            if status in _ACTIVE_FAMILY:
                user.sessions = 1
                user.factors = [
                    {
                        "id": _okta_id("opf"),
                        "factorType": "push",
                        "provider": "OKTA",
                        "status": "ACTIVE",
                    }
                ]
            self._users[user.id] = user
            return user.id

    def add_log_event(self, payload: dict[str, Any]) -> None:
        """Append a System Log event (LogEvent JSON), stored as given.

        It is ordered by its ``published`` time; an event without a readable one (a
        malformed event seeded on purpose) is ordered by the time it was added.
        """
        published = payload.get("published")
        when = _parse_time(published) if isinstance(published, str) else None
        with self._state:
            self._seq += 1
            entry = _LogEntry(
                when if when is not None else time.time(),
                self._seq,
                json.loads(json.dumps(payload)),
            )
            self._events.append(entry)
            self._events.sort()

    # Inspection, for tests and the demo ------------------------------------------------
    def user_status(self, user_id: str) -> str:
        """The Okta status of a user (``KeyError`` if unknown)."""
        return self._users[user_id].status

    def set_user_status(self, user_id: str, status: str) -> None:
        """Change a user's status out of band, as an admin in the Okta console would."""
        if status not in USER_STATUSES:
            raise ValueError(f"status must be one of {sorted(USER_STATUSES)}")
        with self._state:
            self._set_status(self._users[user_id], status)

    def session_count(self, user_id: str) -> int:
        """How many Okta sessions the user holds."""
        return self._users[user_id].sessions

    def revoke_access_tokens(self) -> None:
        """Invalidate every issued OAuth access token (an admin revoking the app's tokens)."""
        with self._state:
            self._tokens.clear()

    # Routes ----------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        """Every route is a documented Okta operation."""
        read, manage, logs = "okta.users.read", "okta.users.manage", "okta.logs.read"
        lifecycle = "/api/v1/users/{id}/lifecycle"
        return [
            Route("/oauth2/v1/token", self._token, methods=["POST"]),
            Route("/api/v1/users", self._api(self._list_users, read), methods=["GET"]),
            Route("/api/v1/users/{id}", self._api(self._get_user, read), methods=["GET"]),
            Route(f"{lifecycle}/suspend", self._api(self._suspend, manage), methods=["POST"]),
            Route(f"{lifecycle}/unsuspend", self._api(self._unsuspend, manage), methods=["POST"]),
            Route(
                f"{lifecycle}/expire_password",
                self._api(self._expire_password, manage),
                methods=["POST"],
            ),
            Route(
                f"{lifecycle}/reset_factors",
                self._api(self._reset_factors, manage),
                methods=["POST"],
            ),
            Route(
                "/api/v1/users/{userId}/sessions",
                self._api(self._revoke_sessions, manage),
                methods=["DELETE"],
            ),
            Route(
                "/api/v1/users/{userId}/factors",
                self._api(self._list_factors, read),
                methods=["GET"],
            ),
            Route("/api/v1/logs", self._api(self._logs, logs), methods=["GET"]),
        ]

    # Envelope, auth and rate limiting --------------------------------------------------
    @staticmethod
    def _error(status: int, code: str, summary: str, causes: Iterable[str] = ()) -> JSONResponse:
        body = {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": "oae" + secrets.token_hex(10),
            "errorCauses": [{"errorSummary": cause} for cause in causes],
        }
        return JSONResponse(body, status_code=status)

    def _not_found(self, ident: str) -> JSONResponse:
        return self._error(404, "E0000007", f"Not found: Resource not found: {ident} (User)")

    def _api(
        self, handler: Callable[[Request], Awaitable[Response]], scope: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            limited, headers = self._count_request()
            if limited:
                response: Response = self._error(
                    429, "E0000047", "API call exceeded rate limit due to too many requests."
                )
            else:
                response = self._authorize(request, scope) or await handler(request)
            response.headers.update(headers)
            response.headers["X-Okta-Request-Id"] = secrets.token_urlsafe(18)
            return response

        return endpoint

    def _count_request(self) -> tuple[bool, dict[str, str]]:
        limit = self.rate_limit_per_minute
        if limit is None:
            return False, {}
        now = time.time()
        with self._state:
            if now >= self._window_start + 60:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            count = self._window_count
            reset = math.ceil(self._window_start + 60)
        headers = {
            "X-Rate-Limit-Limit": str(limit),
            "X-Rate-Limit-Remaining": str(max(0, limit - count)),
            "X-Rate-Limit-Reset": str(reset),
        }
        return count > limit, headers

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """Okta says when its window resets (epoch seconds) and sends no ``Retry-After``."""
        return {
            "X-Rate-Limit-Limit": str(self.rate_limit_per_minute or 600),
            "X-Rate-Limit-Remaining": "0",
            "X-Rate-Limit-Reset": str(math.ceil(time.time() + wait)),
        }

    def _authorize(self, request: Request, scope: str) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme == "SSWS" and secrets.compare_digest(
            credential.encode(), self.LAB_API_TOKEN.encode()
        ):
            return None
        if scheme == "Bearer":
            with self._state:
                grant = self._tokens.get(credential)
            if grant is not None and grant[0] > time.time():
                granted = grant[1]
                # okta.*.manage includes the matching okta.*.read.
                implied = {s.replace(".manage", ".read") for s in granted}
                if scope in granted or scope in implied:
                    return None
                response = self._error(
                    403, "E0000006", "You do not have permission to perform the requested action"
                )
                response.headers["WWW-Authenticate"] = (
                    f'Bearer error="insufficient_scope", scope="{scope}"'
                )
                return response
        return self._error(401, "E0000011", "Invalid token provided")

    # OAuth -----------------------------------------------------------------------------
    @staticmethod
    def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
        return JSONResponse({"error": error, "error_description": description}, status)

    async def _token(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return self._oauth_error(400, "invalid_request", "Expected a form-encoded body.")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(
                400, "unsupported_grant_type", "The grant type is not supported."
            )
        if form.get("client_assertion_type") != _ASSERTION_TYPE or not form.get("client_assertion"):
            return self._oauth_error(
                401, "invalid_client", "Client authentication with private_key_jwt is required."
            )
        audience = str(request.url.replace(query=""))
        problem = self._verify_assertion(form["client_assertion"], audience)
        if problem is not None:
            return self._oauth_error(401, "invalid_client", problem)
        requested = set(form.get("scope", "").split())
        if not requested:
            return self._oauth_error(
                400, "invalid_scope", "The 'scope' parameter is required for client_credentials."
            )
        if not requested <= self.LAB_SCOPES:
            denied = " ".join(sorted(requested - self.LAB_SCOPES))
            return self._oauth_error(
                400, "invalid_scope", f"The following scopes are not allowed: {denied}"
            )
        token = secrets.token_urlsafe(32)
        with self._state:
            self._tokens[token] = (
                time.time() + self.TOKEN_LIFETIME_SECONDS,
                frozenset(requested),
            )
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.TOKEN_LIFETIME_SECONDS,
                "access_token": token,
                "scope": " ".join(sorted(requested)),
            }
        )

    def _verify_assertion(self, assertion: str, audience: str) -> str | None:
        """Why the client assertion is unacceptable, or ``None`` if it is good."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return "The client_assertion is not a valid JWT."
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return "The client_assertion is not a valid JWT."
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "The client_assertion is not a valid JWT."
        if header.get("alg") != "RS256":
            return "The client_assertion must be signed with RS256."
        if header.get("kid") not in (None, self.LAB_KEY_ID):
            return "The client_assertion kid does not match a registered key."
        try:
            self._client_public_key.verify(
                signature,
                f"{parts[0]}.{parts[1]}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "The client_assertion signature is invalid."
        if claims.get("iss") != self.LAB_CLIENT_ID or claims.get("sub") != self.LAB_CLIENT_ID:
            return "The client_assertion iss and sub must be the client_id."
        if claims.get("aud") != audience:
            return "The audience [aud] claim in the client_assertion is invalid."
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat", now)
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            return "The client_assertion exp and iat must be numbers."
        if exp <= now:
            return "The client_assertion token is expired."
        if exp - now > _MAX_ASSERTION_LIFETIME + _CLOCK_SKEW or iat > now + _CLOCK_SKEW:
            return "The client_assertion token has an expiration too far in the future."
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return "The client_assertion must have a jti claim."
        with self._state:
            if jti in self._seen_jti:
                return "The client_assertion token has already been used."
            self._seen_jti.add(jti)
        return None

    # Users -----------------------------------------------------------------------------
    def _by_login(self, login: str) -> _User | None:
        wanted = login.lower()
        for user in self._users.values():
            if str(user.profile["login"]).lower() == wanted:
                return user
        return None

    def _lookup(self, ident: str) -> _User | None:
        """Okta's ``{id}``: a user id, a login, or a login short name if unambiguous."""
        with self._state:
            if ident in self._users:
                return self._users[ident]
            user = self._by_login(ident)
            if user is not None or "@" in ident:
                return user
            short = [
                u
                for u in self._users.values()
                if str(u.profile["login"]).lower().split("@")[0] == ident.lower()
            ]
            return short[0] if len(short) == 1 else None

    def _set_status(self, user: _User, status: str) -> None:
        now = _now_iso()
        user.status, user.status_changed, user.last_updated = status, now, now

    async def _get_user(self, request: Request) -> Response:
        ident = request.path_params["id"]
        user = self._lookup(ident)
        if user is None:
            return self._not_found(ident)
        return JSONResponse(user.body(self.base_url))

    async def _list_users(self, request: Request) -> Response:
        query = request.query_params
        expression = query.get("search") or query.get("filter")
        with self._state:
            users = sorted(self._users.values(), key=lambda u: u.id)
        if expression is not None:
            match = re.fullmatch(
                r'\s*(profile\.login|status)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*', expression
            )
            if match is None:
                return self._error(
                    400,
                    "E0000031",
                    "Invalid search criteria.",
                    ["the simulator supports profile.login eq and status eq only"],
                )
            attribute, value = match.group(1), re.sub(r"\\(.)", r"\1", match.group(2))
            if attribute == "status":
                users = [u for u in users if u.status == value]
            else:
                users = [u for u in users if str(u.profile["login"]).lower() == value.lower()]
        else:
            # Okta omits deprovisioned users unless a search or filter asks for them.
            users = [u for u in users if u.status != "DEPROVISIONED"]
            if query.get("q"):
                prefix = query["q"].lower()
                users = [
                    u
                    for u in users
                    if any(
                        str(u.profile.get(k) or "").lower().startswith(prefix)
                        for k in ("login", "email", "firstName", "lastName")
                    )
                ]
        limit = self._limit(query.get("limit"), default=200, maximum=200)
        if limit is None:
            return self._error(400, "E0000001", "Api validation failed: limit")
        after = query.get("after")
        if after:
            users = [u for u in users if u.id > after]
        page = users[:limit]
        response = JSONResponse([u.body(self.base_url) for u in page])
        if len(users) > limit:
            params = {k: v for k, v in query.items() if k != "after"} | {"after": page[-1].id}
            response.headers["Link"] = (
                f'<{self.base_url}/api/v1/users?{urlencode(params)}>; rel="next"'
            )
        return response

    @staticmethod
    def _limit(raw: str | None, *, default: int, maximum: int) -> int | None:
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            return None
        return min(value, maximum) if value > 0 else None

    async def _suspend(self, request: Request) -> Response:
        return self._lifecycle(
            request,
            "SUSPENDED",
            source="ACTIVE",
            verb="suspend",
            cause="Cannot suspend a user that is not active",
        )

    async def _unsuspend(self, request: Request) -> Response:
        return self._lifecycle(
            request,
            "ACTIVE",
            source="SUSPENDED",
            verb="unsuspend",
            cause="Cannot unsuspend a user that is not suspended",
        )

    def _lifecycle(
        self, request: Request, target: str, *, source: str, verb: str, cause: str
    ) -> Response:
        ident = request.path_params["id"]
        with self._state:
            user = self._lookup(ident)
            if user is None:
                return self._not_found(ident)
            if user.status != source:
                if self.suspend_refusal_in == "errorSummary":
                    return self._error(400, "E0000001", f"Api validation failed: {cause}")
                return self._error(400, "E0000001", f"Api validation failed: {verb}", [cause])
            self._set_status(user, target)
        # Okta answers these two with 200 and no body at all.
        return Response(status_code=200)

    async def _expire_password(self, request: Request) -> Response:
        ident = request.path_params["id"]
        with self._state:
            user = self._lookup(ident)
            if user is None:
                return self._not_found(ident)
            # Okta documents 403 for this call and says the user's status limits which
            # lifecycle operations are allowed; a SUSPENDED (or never activated, or
            # deprovisioned) user is answered 403 E0000038, as a live org does.
            if user.status not in _ACTIVE_FAMILY:
                return self._error(
                    403,
                    "E0000038",
                    "This operation is not allowed in the user's current status.",
                )
            user.password_expired = True
            self._set_status(user, "PASSWORD_EXPIRED")
            body = user.body(self.base_url)
        return JSONResponse(body)

    async def _reset_factors(self, request: Request) -> Response:
        ident = request.path_params["id"]
        with self._state:
            user = self._lookup(ident)
            if user is None:
                return self._not_found(ident)
            if user.status not in _ACTIVE_FAMILY and not (
                self.reset_factors_while_suspended and user.status == "SUSPENDED"
            ):
                return self._error(
                    403,
                    "E0000038",
                    "This operation is not allowed in the user's current status.",
                )
            user.factors = []
        return Response(status_code=200)

    async def _revoke_sessions(self, request: Request) -> Response:
        ident = request.path_params["userId"]
        for name in ("oauthTokens", "forgetDevices"):
            if request.query_params.get(name, "true") not in ("true", "false"):
                return self._error(400, "E0000001", f"Api validation failed: {name}")
        with self._state:
            user = self._lookup(ident)
            if user is None:
                return self._not_found(ident)
            user.sessions = 0
        return Response(status_code=204)

    async def _list_factors(self, request: Request) -> Response:
        ident = request.path_params["userId"]
        user = self._lookup(ident)
        if user is None:
            return self._not_found(ident)
        return JSONResponse(list(user.factors))

    # System Log ------------------------------------------------------------------------
    async def _logs(self, request: Request) -> Response:
        query = request.query_params
        bounds: dict[str, float | None] = {}
        for name in ("since", "until"):
            raw = query.get(name)
            bounds[name] = None if raw is None else _parse_time(raw)
            if raw is not None and bounds[name] is None:
                return self._error(
                    400,
                    "E0000001",
                    "Api validation failed: " + name,
                    [f"{name}: must be an ISO 8601 timestamp"],
                )
        limit = self._limit(query.get("limit"), default=100, maximum=1000)
        order = query.get("sortOrder", "ASCENDING")
        if limit is None or order not in ("ASCENDING", "DESCENDING"):
            return self._error(400, "E0000001", "Api validation failed: limit or sortOrder")
        event_type: str | None = None
        if query.get("filter"):
            match = re.fullmatch(r'\s*eventType\s+eq\s+"([^"]+)"\s*', query["filter"])
            if match is None:
                return self._error(
                    400,
                    "E0000001",
                    "Api validation failed: filter",
                    ["the simulator supports eventType eq only"],
                )
            event_type = match.group(1)
        with self._state:
            entries = list(self._events)
        since, until = bounds["since"], bounds["until"]
        entries = [
            e
            for e in entries
            if (since is None or e.published >= since)
            and (until is None or e.published < until)
            and (event_type is None or e.payload.get("eventType") == event_type)
        ]
        if order == "DESCENDING":
            entries.reverse()
        after = query.get("after")
        if after:
            try:
                millis, seq = (int(part) for part in after.split("_"))
            except ValueError:
                return self._error(400, "E0000001", "Api validation failed: after")
            if order == "ASCENDING":
                entries = [e for e in entries if e.key > (millis, seq)]
            else:
                entries = [e for e in entries if e.key < (millis, seq)]
        page = entries[:limit]
        response = JSONResponse([e.payload for e in page])
        params = {k: v for k, v in query.items() if k != "after"}
        links = [f'<{self.base_url}/api/v1/logs?{urlencode(query)}>; rel="self"']
        # A polling query (no until) always links onward, even from an empty page, so the
        # client can keep following it as new events arrive; a bounded query ends.
        cursor = page[-1].cursor if page else after
        if until is None or len(entries) > limit:
            next_params = params | ({"after": cursor} if cursor else {})
            links.append(f'<{self.base_url}/api/v1/logs?{urlencode(next_params)}>; rel="next"')
        response.headers["Link"] = ", ".join(links)
        return response
