"""Microsoft Defender for Endpoint settings and the authenticated HTTP client.

The API host and the Entra ID token host differ; both calls go through the one client
(the token call uses an absolute URL), so one injected transport serves both.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.errors import AuthError, RejectedError
from integrations.http import (
    CachedBearerAuth,
    TokenCache,
    read_token,
    seconds_header,
    send,
    tls_verify,
)

VENDOR = "defender"
MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default"
"""The token audience; the securitycenter resource is required even on api.security.*."""

retry_after = seconds_header("Retry-After")
"""MDE throttling answers 429 with ``Retry-After`` in seconds."""


class DefenderSettings(BaseSettings):
    """Connection settings, read from ``STANCH_DEFENDER_<FIELD>``.

    Attributes:
        base_url: the MDE API host (or a geo host such as ``https://eu.api.security.microsoft.com``).
        login_url: the Microsoft identity platform host.
        tenant_id: the Entra tenant the app registration lives in.
        client_id: the app registration's client id.
        client_secret: the app registration's client secret.
        timeout_seconds: per-request timeout.
        action_poll_seconds: pause between polls of a machine action.
        action_timeout_seconds: how long to poll a machine action before reporting it pending.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_DEFENDER_", extra="ignore")

    base_url: str = "https://api.security.microsoft.com"
    login_url: str = "https://login.microsoftonline.com"
    tenant_id: str
    client_id: str
    client_secret: SecretStr
    timeout_seconds: float = 10
    action_poll_seconds: float = 2
    action_timeout_seconds: float = 120


class DefenderClient(httpx.AsyncClient):
    """An ``AsyncClient`` that also carries the machine-action polling settings.

    Adapters take only the client, so the polling interval and timeout from
    :class:`DefenderSettings` travel with it.

    Attributes:
        token_cache: the Entra token cache (``fetches`` counts token requests).
        action_poll_seconds: pause between polls of a machine action.
        action_timeout_seconds: how long to poll before returning a pending receipt.
    """

    def __init__(
        self,
        *,
        token_cache: TokenCache,
        action_poll_seconds: float,
        action_timeout_seconds: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token_cache = token_cache
        self.action_poll_seconds = action_poll_seconds
        self.action_timeout_seconds = action_timeout_seconds


def describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from MDE's ``{"error": {"code", "message"}}`` envelope."""
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    message, code = error.get("message"), error.get("code")
    return (
        message if isinstance(message, str) else None,
        code if isinstance(code, str) else None,
    )


def describe_token_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from Entra's OAuth ``{"error", "error_description"}`` envelope."""
    body = response.json()
    if not isinstance(body, dict):
        return None, None
    message, code = body.get("error_description"), body.get("error")
    return (
        message if isinstance(message, str) else None,
        code if isinstance(code, str) else None,
    )


def connect(
    settings: DefenderSettings, transport: httpx.AsyncBaseTransport | None = None
) -> DefenderClient:
    """Build the MDE client: base URL, timeouts, and a cached Entra bearer token.

    Vendor API: POST {login_url}/{tenantId}/oauth2/v2.0/token (client credentials).

    Args:
        settings: connection settings.
        transport: replaces the network for both hosts (a simulator in tests and the lab).

    Returns:
        A :class:`DefenderClient`; the caller closes it.
    """
    token_url = f"{settings.login_url.rstrip('/')}/{settings.tenant_id}/oauth2/v2.0/token"

    async def fetch_token() -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value(),
            "scope": MDE_SCOPE,
        }
        try:
            # auth=None: the token request must not wait on the token it is fetching.
            response = await send(
                client,
                "POST",
                token_url,
                vendor=VENDOR,
                ok=(200,),
                retry_after=retry_after,
                describe=describe_token_error,
                data=form,
                auth=None,
                mutates=False,
            )
        except RejectedError as exc:
            # Entra answers 400 for an unknown tenant or app (invalid_request,
            # unauthorized_client): a credentials problem, not a bad API call.
            raise AuthError(
                exc.args[0], vendor=VENDOR, status_code=exc.status_code, vendor_code=exc.vendor_code
            ) from exc
        token, lifetime, _ = read_token(response, vendor=VENDOR, default_lifetime=3599)
        return token, lifetime

    cache = TokenCache(fetch_token)
    client = DefenderClient(
        token_cache=cache,
        action_poll_seconds=settings.action_poll_seconds,
        action_timeout_seconds=settings.action_timeout_seconds,
        base_url=settings.base_url,
        auth=CachedBearerAuth(cache),
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(),
        transport=transport,
        headers={"Accept": "application/json"},
    )
    return client
