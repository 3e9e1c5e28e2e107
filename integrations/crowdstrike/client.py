"""CrowdStrike Falcon settings, the authenticated client, and the vendor's error envelope.

Every adapter call goes through :func:`call`, which adds the rate-limit parser and reads
CrowdStrike's ``{"meta", "resources", "errors"}`` envelope, including errors that ride
inside a 2xx body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.errors import IntegrationError, VendorUnavailable
from integrations.http import (
    CachedBearerAuth,
    TokenCache,
    epoch_header,
    error_for_status,
    read_token,
    send,
    tls_verify,
)

VENDOR = "crowdstrike"
OAUTH2_ACCESS = "/oauth2/token"

# CrowdStrike says *when* to retry (epoch seconds), not how long; `Retry-After` is never sent.
RETRY_AFTER = epoch_header("X-Ratelimit-Retryafter")


class CrowdStrikeSettings(BaseSettings):
    """Connection settings, read from ``STANCH_CROWDSTRIKE_<FIELD>``.

    Attributes:
        base_url: the API host of the account's region (US-1 by default).
        client_id: the API client id.
        client_secret: the API client secret.
        timeout_seconds: connect/read/write/pool timeout of every request.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_CROWDSTRIKE_")

    base_url: str = "https://api.crowdstrike.com"
    client_id: str
    client_secret: SecretStr
    timeout_seconds: float = 10


def connect(
    settings: CrowdStrikeSettings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    refresh_margin: float = 60.0,
) -> httpx.AsyncClient:
    """Build the client the adapters take: base URL, OAuth2 bearer auth and timeouts.

    The token comes from the client-credentials grant and is shared by every request
    of this client; it is refreshed ``refresh_margin`` seconds before its ~30 minute
    lifetime ends, and concurrent callers wait for a single fetch.

    Args:
        settings: where and who to connect as.
        transport: replaces the network (a simulator's in-process transport in tests).
        clock: monotonic time source for token expiry, injectable for tests.
        refresh_margin: seconds before expiry at which the token is renewed.

    Returns:
        An ``httpx.AsyncClient``; the caller closes it.
    """
    client = httpx.AsyncClient(
        base_url=settings.base_url,
        transport=transport,
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(),
        headers={"Accept": "application/json"},
    )

    async def fetch_token() -> tuple[str, float]:
        """Vendor API: POST /oauth2/token (form client_id, client_secret; answers 201)."""
        response = await send(
            client,
            "POST",
            OAUTH2_ACCESS,
            vendor=VENDOR,
            ok=(201,),
            retry_after=RETRY_AFTER,
            describe=describe,
            data={
                "client_id": settings.client_id,
                "client_secret": settings.client_secret.get_secret_value(),
            },
            # The token request must not carry the bearer it is fetching.
            auth=None,
            mutates=False,
        )
        token, lifetime, _ = read_token(response, vendor=VENDOR, default_lifetime=1799)
        return token, lifetime

    cache = TokenCache(fetch_token, refresh_margin=refresh_margin, clock=clock)
    client.auth = CachedBearerAuth(cache)
    return client


def describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` of the first entry of a CrowdStrike ``errors[]`` envelope.

    Raises:
        ValueError: the body is not JSON or not the envelope (``send`` then falls back
            to the status alone).
    """
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not a CrowdStrike envelope")
    errors = body_errors(body)
    if not errors:
        return None, None
    messages = "; ".join(str(e.get("message", "")) for e in errors if e.get("message"))
    return messages or None, _code_of(errors[0])


def body_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``errors[]`` entries of an envelope (``null`` and absent count as none)."""
    errors = body.get("errors")
    if not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, dict)]


def _code_of(error: dict[str, Any]) -> str | None:
    code = error.get("code")
    return None if code is None else str(code)


def error_from_body(response: httpx.Response, error: dict[str, Any]) -> IntegrationError:
    """The error tree member for one ``errors[]`` entry found in a 2xx body.

    CrowdStrike reports per-item failures (and some scope failures) inside a 2xx body
    with an HTTP-like ``code``; the entry is classified exactly as that status would be.
    """
    try:
        status = int(error.get("code", 0))
    except (TypeError, ValueError):
        status = 0
    if status < 400:
        # An error entry without a usable code: not retryable by anything we know.
        status = 400
    stand_in = httpx.Response(status, headers=response.headers, request=response.request)
    return error_for_status(
        stand_in,
        vendor=VENDOR,
        message=str(error.get("message") or "error in response body"),
        vendor_code=_code_of(error),
        retry_after=RETRY_AFTER,
    )


async def call(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    ok: Collection[int] = (200,),
    **kwargs: Any,
) -> tuple[httpx.Response, dict[str, Any]]:
    """Send one CrowdStrike request and return the response with its JSON envelope.

    Body-level ``errors[]`` are *not* raised here: callers decide which per-item codes
    mean success (409 on contain, 404 on delete) and call :func:`raise_body_errors`.

    Raises:
        IntegrationError: transport failure, a status outside ``ok``, or a success
            response whose body is not a JSON object.
    """
    response = await send(
        client,
        method,
        url,
        vendor=VENDOR,
        ok=ok,
        retry_after=RETRY_AFTER,
        describe=describe,
        **kwargs,
    )
    try:
        body = response.json()
    except ValueError as exc:
        raise VendorUnavailable(
            f"{method} {url}: response is not JSON",
            vendor=VENDOR,
            status_code=response.status_code,
        ) from exc
    if not isinstance(body, dict):
        raise VendorUnavailable(
            f"{method} {url}: response is not a JSON object",
            vendor=VENDOR,
            status_code=response.status_code,
        )
    return response, body


def raise_body_errors(
    response: httpx.Response, body: dict[str, Any], *, ignore: Collection[int] = ()
) -> None:
    """Raise the first ``errors[]`` entry whose code is not in ``ignore``.

    Raises:
        IntegrationError: classified by :func:`error_from_body`.
    """
    for error in body_errors(body):
        code = _int_code(error)
        if code is not None and code in ignore:
            continue
        raise error_from_body(response, error)


def _int_code(error: dict[str, Any]) -> int | None:
    try:
        return int(error["code"])
    except (KeyError, TypeError, ValueError):
        return None


def resources(body: dict[str, Any]) -> list[Any]:
    """The ``resources`` list of an envelope (``null`` counts as empty)."""
    found = body.get("resources")
    return found if isinstance(found, list) else []


def trace_id(body: dict[str, Any]) -> str | None:
    """``meta.trace_id``: the vendor's id for the request, kept on receipts."""
    meta = body.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("trace_id"), str):
        return str(meta["trace_id"])
    return None


def fql_string(value: str) -> str:
    """Quote ``value`` as an FQL string literal, so it can never close the quote early.

    FQL string literals are single-quoted; a backslash escapes the next character.
    """
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
