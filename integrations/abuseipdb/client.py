"""AbuseIPDB API v2 settings, client construction, and the error envelope.

The key goes in the ``Key`` header. Errors come as ``{"errors": [{"detail": ...,
"status": 429}]}``. A 429 carries ``Retry-After`` (seconds) and ``X-RateLimit-Reset``
(epoch); every answer carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.http import send, tls_verify

VENDOR = "abuseipdb"


class AbuseIPDBSettings(BaseSettings):
    """Where and how to reach AbuseIPDB, read from ``STANCH_ABUSEIPDB_*``.

    Attributes:
        base_url: ``https://api.abuseipdb.com``; the API lives under ``/api/v2``.
        api_key: the account's APIv2 key.
        max_age_days: how far back reports count (1-365; AbuseIPDB's own default is 30).
        timeout_seconds: connect/read/write/pool timeout for each request.
        verify_tls: check the server certificate.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_ABUSEIPDB_")

    base_url: str = "https://api.abuseipdb.com"
    api_key: SecretStr
    max_age_days: int = 90
    timeout_seconds: float = 10
    verify_tls: bool = True


def connect(
    settings: AbuseIPDBSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An ``AsyncClient`` for AbuseIPDB with the key in the ``Key`` header.

    The key is never sent as the ``key`` query parameter the API also accepts: it would
    land in access logs. ``maxAgeInDays`` rides on the client so the adapter, which
    only gets the client, reads it back.
    """
    return httpx.AsyncClient(
        base_url=settings.base_url,
        headers={"Key": settings.api_key.get_secret_value(), "Accept": "application/json"},
        params={"maxAgeInDays": str(settings.max_age_days)},
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(settings.verify_tls),
        transport=transport,
    )


def _describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(detail, None)`` from AbuseIPDB's ``errors`` list (ValueError if there is none)."""
    body = response.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        raise ValueError("not an AbuseIPDB error envelope")
    return str(errors[0].get("detail") or "AbuseIPDB error"), None


async def check(client: httpx.AsyncClient, ip: str) -> httpx.Response:
    """``GET /api/v2/check?ipAddress=…&maxAgeInDays=…``; the 200 response, or an error.

    Raises:
        RateLimited: 429 (daily limit), ``retry_after`` from ``Retry-After``.
        AuthError: 401.
        RejectedError: 422 (an invalid ``ipAddress`` or ``maxAgeInDays``).
        VendorUnavailable: 5xx.
    """
    return await send(
        client,
        "GET",
        "/api/v2/check",
        vendor=VENDOR,
        ok=(200,),
        describe=_describe,
        params={**dict(client.params), "ipAddress": ip},
    )
