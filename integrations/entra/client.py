"""Microsoft Graph connection for Entra ID: settings, client-credentials token, error mapping.

Every Graph call goes through :func:`graph_send`, which maps outcomes onto
:mod:`integrations.errors` and reads Graph's ``{"error": {...}}`` envelope.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

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

VENDOR = "entra"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"

# Graph answers 429 with Retry-After in seconds; Identity Protection's 429s omit it, and
# the parser then yields None so the flow layer falls back on its own backoff.
RETRY_AFTER = seconds_header("Retry-After")


class EntraSettings(BaseSettings):
    """Entra ID app registration, read from ``STANCH_ENTRA_<FIELD>``.

    Attributes:
        base_url: Graph root including the API version.
        login_url: Microsoft identity platform host that issues tokens.
        tenant_id: directory (tenant) id or verified domain.
        client_id: application (client) id of the app registration.
        client_secret: a client secret of that app registration.
        timeout_seconds: connect/read/write/pool timeout for every request.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_ENTRA_", extra="ignore")

    base_url: str = "https://graph.microsoft.com/v1.0"
    login_url: str = "https://login.microsoftonline.com"
    tenant_id: str
    client_id: str
    client_secret: SecretStr
    timeout_seconds: float = 10


def describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from a Graph or identity-platform error body.

    Graph wraps errors as ``{"error": {"code", "message", "innerError": {"request-id"}}}``;
    the token endpoint uses OAuth's ``{"error": "<code>", "error_description": "..."}``.

    Raises:
        ValueError: the body is neither shape (e.g. a proxy's HTML page).
    """
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("error body is not a JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        inner = error.get("innerError")
        request_id = inner.get("request-id") if isinstance(inner, dict) else None
        if isinstance(message, str) and request_id:
            # The request-id is what Microsoft support asks for; keep it with the message.
            message = f"{message} (request-id {request_id})"
        code = error.get("code")
        return (
            message if isinstance(message, str) else None,
            code if isinstance(code, str) else None,
        )
    if isinstance(error, str):
        description = body.get("error_description")
        return (description if isinstance(description, str) else None, error)
    raise ValueError("error body is not a Graph error envelope")


async def graph_send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    ok: tuple[int, ...] = (200,),
    **kwargs: Any,
) -> httpx.Response:
    """:func:`integrations.http.send` with Graph's retry header and error envelope."""
    return await send(
        client,
        method,
        url,
        vendor=VENDOR,
        ok=ok,
        retry_after=RETRY_AFTER,
        describe=describe,
        **kwargs,
    )


def segment(value: str) -> str:
    """``value`` percent-encoded as one path segment.

    B2B guest UPNs contain ``#EXT#`` (``#`` would start a URL fragment) and UPNs may
    contain ``+`` (some stacks read it as a space), so everything but ``@`` is encoded.
    """
    return quote(value, safe="@")


def odata_query(params: dict[str, str | int]) -> str:
    """A query string that keeps OData's ``$`` option names and literal punctuation."""
    return urlencode(params, quote_via=quote, safe="$,':")


def connect(
    settings: EntraSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An ``AsyncClient`` for Graph that authenticates with client credentials.

    The token comes from ``POST {login_url}/{tenant}/oauth2/v2.0/token`` and is shared
    through a :class:`TokenCache`, so concurrent callers trigger one fetch. The token
    request goes through the same client (absolute URL, no auth) and therefore through
    the same ``transport`` as the Graph calls, even though the hosts differ.

    Args:
        settings: tenant, app credentials, URLs and timeout.
        transport: replaces the network (a simulator, a mock).
    """
    token_url = f"{settings.login_url.rstrip('/')}/{segment(settings.tenant_id)}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": settings.client_id,
        "client_secret": settings.client_secret.get_secret_value(),
        "scope": GRAPH_SCOPE,
    }

    async def fetch() -> tuple[str, float]:
        try:
            response = await graph_send(
                client, "POST", token_url, data=form, auth=None, mutates=False
            )
        except RejectedError as exc:
            # The identity platform answers 400 for an unknown tenant or client id and
            # for a bad scope: all configuration mistakes that retrying cannot fix.
            raise AuthError(
                str(exc.args[0]),
                vendor=VENDOR,
                status_code=exc.status_code,
                vendor_code=exc.vendor_code,
            ) from exc
        token, lifetime, _ = read_token(response, vendor=VENDOR, default_lifetime=3599)
        return token, lifetime

    cache = TokenCache(fetch)
    client = httpx.AsyncClient(
        base_url=settings.base_url,
        auth=CachedBearerAuth(cache),
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(),
        transport=transport,
        headers={"Accept": "application/json", "User-Agent": "stanch"},
    )
    return client
