"""SentinelOne settings and the HTTP client (static ``ApiToken`` header, no token minting)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.http import seconds_header, tls_verify

VENDOR = "sentinelone"
API = "/web/api/v2.1"
"""Every documented route lives under this prefix of the console host."""

retry_after = seconds_header("Retry-After")
"""S1 documents no rate-limit header; a ``Retry-After`` from a proxy is honoured if present."""


class SentinelOneSettings(BaseSettings):
    """Connection settings, read from ``STANCH_SENTINELONE_<FIELD>``.

    Attributes:
        base_url: the management console, e.g. ``https://<tenant>.sentinelone.net``.
        api_token: a service-user API token.
        timeout_seconds: per-request timeout.
        hunt_poll_seconds: pause between polls of a Deep Visibility query.
        hunt_timeout_seconds: how long a hunt waits for its query to finish before it
            cancels it and reports an incomplete result.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_SENTINELONE_", extra="ignore")

    base_url: str
    api_token: SecretStr
    timeout_seconds: float = 10
    hunt_poll_seconds: float = Field(default=1.0, gt=0)
    hunt_timeout_seconds: float = Field(default=60.0, gt=0)


class SentinelOneClient(httpx.AsyncClient):
    """An ``AsyncClient`` that also carries the Deep Visibility polling settings."""

    def __init__(self, *, hunt_poll_seconds: float, hunt_timeout_seconds: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.hunt_poll_seconds = hunt_poll_seconds
        self.hunt_timeout_seconds = hunt_timeout_seconds


def describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from S1's ``{"errors": [{"code", "detail", "title"}]}`` envelope."""
    body = response.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    first = errors[0]
    parts = [str(first[k]) for k in ("title", "detail") if first.get(k)]
    code = first.get("code")
    return ("; ".join(parts) or None), (None if code is None else str(code))


def connect(
    settings: SentinelOneSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """Build the S1 client: console base URL, ``Authorization: ApiToken <token>``, timeouts.

    Args:
        settings: connection settings.
        transport: replaces the network (a simulator in tests and the lab).

    Returns:
        The client; the caller closes it.
    """
    return SentinelOneClient(
        hunt_poll_seconds=settings.hunt_poll_seconds,
        hunt_timeout_seconds=settings.hunt_timeout_seconds,
        base_url=settings.base_url,
        headers={
            "Authorization": f"ApiToken {settings.api_token.get_secret_value()}",
            "Accept": "application/json",
        },
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(),
        transport=transport,
    )
