"""VirusTotal API v3 settings, client construction, and the error envelope.

Every call sends the key in the ``x-apikey`` header. Errors come as
``{"error": {"code": "NotFoundError", "message": ...}}``; the code is kept on the raised
error, so a 429 says whether a quota (``QuotaExceededError``) or the request rate
(``TooManyRequestsError``) was hit.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.http import send, tls_verify

VENDOR = "virustotal"
QUOTA_EXCEEDED = "QuotaExceededError"
"""VirusTotal's 429 code: a minute, daily or monthly quota is spent (daily resets 00:00 UTC)."""


class VirusTotalSettings(BaseSettings):
    """Where and how to reach VirusTotal, read from ``STANCH_VIRUSTOTAL_*``.

    Attributes:
        base_url: ``https://www.virustotal.com``; the API lives under ``/api/v3``.
        api_key: the account's API key (Profile > API key).
        timeout_seconds: connect/read/write/pool timeout for each request.
        verify_tls: check the server certificate.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_VIRUSTOTAL_")

    base_url: str = "https://www.virustotal.com"
    api_key: SecretStr
    timeout_seconds: float = 10
    verify_tls: bool = True


def connect(
    settings: VirusTotalSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An ``AsyncClient`` for VirusTotal with the key in the ``x-apikey`` header.

    Args:
        settings: base URL, key, timeouts.
        transport: replaces the network (a simulator's in-process transport in tests).
    """
    return httpx.AsyncClient(
        base_url=settings.base_url,
        headers={"x-apikey": settings.api_key.get_secret_value(), "Accept": "application/json"},
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(settings.verify_tls),
        transport=transport,
    )


def _describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from VirusTotal's error envelope (ValueError if it is not one)."""
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise ValueError("not a VirusTotal error envelope")
    code = error.get("code")
    return str(error.get("message") or code), None if code is None else str(code)


def _no_retry_header(headers: httpx.Headers) -> float | None:
    # VirusTotal documents no header saying when to try again ([U]); a Retry-After, if a
    # proxy adds one, is still read.
    raw = headers.get("Retry-After")
    try:
        return None if raw is None else max(0.0, float(raw))
    except ValueError:
        return None


async def get_object(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """GET one object (``/api/v3/files/{id}``); a 200 or a 404 is returned, anything else raises.

    Raises:
        RateLimited: 429 (``vendor_code`` ``QuotaExceededError`` or ``TooManyRequestsError``).
        AuthError: 401 (``WrongCredentialsError``, ``AuthenticationRequiredError``) or 403.
        RejectedError: 400 (``InvalidArgumentError``, ``BadRequestError``).
        VendorUnavailable: 5xx.
    """
    return await send(
        client,
        "GET",
        path,
        vendor=VENDOR,
        ok=(200, 404),
        describe=_describe,
        retry_after=_no_retry_header,
    )
