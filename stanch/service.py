"""The detection intake HTTP service: vendor webhooks in, incidents out.

``POST /v1/alerts/{source}`` takes one alert object or an array of them. Responses:

* ``202`` every item was accepted or was a duplicate; the body has the counts.
* ``207`` a mixed batch: the valid items were accepted, the others dead-lettered; the body
  has the counts and, under ``rejected_items``, the index, field and reason of each bad
  item (per-item results for the failures only, so a 5,000-alert batch stays small).
* ``422`` no item was valid (same body as ``207``); each is dead-lettered all the same.
* ``400`` a body that is not UTF-8 JSON (kept as a dead letter, raw bytes and all),
  ``401`` bad or missing credentials or an unknown source (answered alike, so that source
  names cannot be enumerated), ``413`` body over the limit.

HMAC signature base string: ``<timestamp>.<source>.<body>``, where ``<timestamp>`` is the
ASCII decimal Unix time of ``X-Stanch-Timestamp``, ``<source>`` the source name of the URL
path (letters, digits, ``_`` and ``-``: never a ``.``) and ``<body>`` the raw request body;
the signature is the hex HMAC-SHA256 of it under the source's secret. Signing the source
name means a request signed for one source is refused by every other one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flows.detect import TENANT_PATTERN, BodyRejected, IngestResult, Intake, split_batch
from stanch.cases_api import CasesApi
from stanch.slack_listener import SlackInteractions

log = logging.getLogger("stanch.serve")

TIMESTAMP_HEADER = "X-Stanch-Timestamp"
SIGNATURE_HEADER = "X-Stanch-Signature"
SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Source names: no ``.``, which separates the parts of the signature base string."""
_SOURCE_NAME = re.compile(SOURCE_NAME_PATTERN)
# At most 12 ASCII digits (year 33658): str.isdigit() also takes "²" and 400-digit
# numbers, and int() then raises or the subtraction overflows a float.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_UNAUTHENTICATED = "authentication failed"


class ServiceSettings(BaseModel):
    """Limits of the intake service.

    Attributes:
        max_body_bytes: larger request bodies get ``413``.
        signature_tolerance_seconds: how far an HMAC timestamp may be from now.
        max_items: alerts per request; more get ``413`` (split the batch).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    signature_tolerance_seconds: int = Field(default=300, ge=1)
    max_items: int = Field(default=10_000, ge=1)


class SourceAuth(BaseModel):
    """One configured alert source: whose alerts, in which format, and how it proves itself.

    Exactly one of ``hmac_secret`` and ``bearer_token`` is set. With HMAC the sender signs
    ``<timestamp>.<source>.<body>`` with SHA-256 and sends the Unix timestamp in
    ``X-Stanch-Timestamp`` and the hex digest (optionally ``sha256=``-prefixed) in
    ``X-Stanch-Signature``; with a bearer token it sends ``Authorization: Bearer <token>``.

    Attributes:
        tenant: the tenant every alert of this source belongs to.
        format: ``ocsf`` or the vendor whose payloads the source sends (one of
            :data:`flows.detect.SOURCE_FORMATS`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(pattern=TENANT_PATTERN)
    format: Literal["ocsf", "crowdstrike", "defender", "entra", "okta", "sentinelone"] = "ocsf"
    hmac_secret: SecretStr | None = None
    bearer_token: SecretStr | None = None

    @model_validator(mode="after")
    def _one_method(self) -> SourceAuth:
        if (self.hmac_secret is None) == (self.bearer_token is None):
            raise ValueError("set exactly one of hmac_secret and bearer_token")
        secret = self.hmac_secret or self.bearer_token
        if secret is not None and len(secret.get_secret_value()) < 16:
            raise ValueError("secrets must be at least 16 characters")
        return self


class _TooLarge(Exception):
    pass


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _bearer_ok(request: Request, token: SecretStr) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode())


def _timestamp_fresh(request: Request, tolerance: int) -> str | None:
    """The timestamp header if it is a Unix time within ``tolerance`` of now, else None."""
    stamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not _TIMESTAMP.fullmatch(stamp):
        return None
    return stamp if abs(time.time() - int(stamp)) <= tolerance else None


def _digest(secret: str, stamp: str, source: str, body: bytes) -> str:
    base = b".".join((stamp.encode(), source.encode(), body))
    return hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _signature_ok(
    request: Request, secret: SecretStr, stamp: str, source: str, body: bytes
) -> bool:
    given = request.headers.get(SIGNATURE_HEADER, "").strip().removeprefix("sha256=")
    expected = _digest(secret.get_secret_value(), stamp, source, body)
    # Header values are Latin-1 on the wire: a non-ASCII one must not raise here.
    return hmac.compare_digest(given.lower().encode("utf-8", "replace"), expected.encode())


def sign(secret: str, body: bytes, *, source: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender adds to ``body`` posted to ``/v1/alerts/<source>`` (HMAC)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = _digest(secret, stamp, source, body)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={digest}"}


def check_sources(sources: dict[str, SourceAuth]) -> None:
    """Refuse source names the signature cannot separate, and secrets shared by tenants.

    Whoever holds a secret can sign for every source that has it: two tenants sharing
    one would let either post the other's alerts.

    Raises:
        ValueError: naming the source (never the secret).
    """
    owners: dict[str, tuple[str, str]] = {}
    for name, source in sources.items():
        if not _SOURCE_NAME.match(name):
            raise ValueError(
                f"source {name[:40]!r}: names are lower-case letters, digits, '_' and '-'"
            )
        secret = source.hmac_secret or source.bearer_token
        assert secret is not None  # SourceAuth holds exactly one
        owner = owners.setdefault(secret.get_secret_value(), (name, source.tenant))
        if owner[1] != source.tenant:
            raise ValueError(
                f"sources {owner[0]!r} ({owner[1]}) and {name!r} ({source.tenant}) share a "
                "secret: give each tenant its own"
            )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    # The declared length may be absent (chunked) or wrong: count what actually arrives.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _summary(result: IngestResult) -> dict[str, Any]:
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "new_incidents": result.new_incidents,
        "joined": result.joined,
        "started": result.started,
        "recorded_only": result.recorded_only,
    }


def create_app(
    settings: ServiceSettings,
    intake: Intake,
    *,
    sources: dict[str, SourceAuth],
    slack: SlackInteractions | None = None,
    cases: CasesApi | None = None,
) -> Starlette:
    """The intake service as an ASGI app.

    Args:
        settings: size and signature limits.
        intake: where alerts go; it owns the store and the start callback.
        sources: the accepted sources by the name in the URL path.
        slack: when given, Slack interactions are received at ``POST /slack/interactions``.
        cases: when given, the cases API (``/v1/incidents…``, ``/openapi.json``).

    Raises:
        ValueError: a source name or shared secret :func:`check_sources` refuses.
    """
    check_sources(sources)

    async def post_alerts(request: Request) -> JSONResponse:
        name = request.path_params["source"]
        source = sources.get(name)
        # One answer for every failure, an unknown source included: the reason goes to
        # the log only, so a caller learns neither which names exist nor how they
        # authenticate.
        if source is None:
            log.warning("alerts refused: unknown source %r", name[:80])
            return _error(401, _UNAUTHENTICATED)
        # Check what can be checked before reading a body an attacker may make large.
        stamp: str | None = None
        if source.bearer_token is not None:
            if not _bearer_ok(request, source.bearer_token):
                log.warning("alerts refused on %s: missing or wrong bearer token", name)
                return _error(401, _UNAUTHENTICATED)
        else:
            stamp = _timestamp_fresh(request, settings.signature_tolerance_seconds)
            if stamp is None or not request.headers.get(SIGNATURE_HEADER):
                log.warning("alerts refused on %s: missing, stale or malformed headers", name)
                return _error(401, _UNAUTHENTICATED)
        try:
            body = await _read_body(request, settings.max_body_bytes)
        except _TooLarge:
            return _error(413, f"body larger than {settings.max_body_bytes} bytes")
        if source.hmac_secret is not None and (
            stamp is None or not _signature_ok(request, source.hmac_secret, stamp, name, body)
        ):
            log.warning("alerts refused on %s: bad signature", name)
            return _error(401, _UNAUTHENTICATED)
        try:
            payloads, _array = split_batch(body)
        except BodyRejected as exc:
            # Kept byte for byte: what a sender's bug produced is the evidence.
            await intake.store.dead_letter(
                source=f"{source.tenant}/{source.format}",
                field=exc.field,
                reason=exc.reason,
                payload=body.decode("utf-8", "replace").replace("\x00", "\ufffd"),
                raw=body,
            )
            return _error(400, exc.reason, field=exc.field)
        if not payloads:
            return _error(400, "empty batch")
        if len(payloads) > settings.max_items:
            return _error(413, f"more than {settings.max_items} alerts in one request")
        result = await intake.ingest(source.tenant, source.format, payloads, checked=True)
        body_out = _summary(result)
        if not result.rejected:
            return JSONResponse(body_out, status_code=202)
        body_out["rejected_items"] = [
            {"index": item.index, "field": item.field, "reason": item.reason}
            for item in result.items
            if item.status == "rejected"
        ]
        return JSONResponse(
            body_out, status_code=207 if result.accepted or result.duplicates else 422
        )

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> JSONResponse:
        if await intake.ready():
            return JSONResponse({"status": "ready"})
        return _error(503, "store not reachable")

    routes = [
        Route("/v1/alerts/{source}", post_alerts, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if slack is not None:
        routes.append(slack.route())
    if cases is not None:
        routes.extend(cases.routes())
    return Starlette(routes=routes)


__all__ = [
    "SIGNATURE_HEADER",
    "SOURCE_NAME_PATTERN",
    "TIMESTAMP_HEADER",
    "ServiceSettings",
    "SourceAuth",
    "check_sources",
    "create_app",
    "sign",
]
