"""FortiOS REST API settings, client construction, and the JSON envelope check.

Every FortiGate call goes through :func:`call`, which reads the envelope's ``status``
as well as the HTTP status and turns FortiOS's 429 (an auth lockout) into an auth error.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.errors import AuthError, IntegrationError, VendorUnavailable
from integrations.http import error_for_status, send, tls_verify

VENDOR = "fortigate"


class FortiGateSettings(BaseSettings):
    """Where and how to reach one FortiGate, read from ``STANCH_FORTIGATE_*``.

    Attributes:
        base_url: scheme, host and admin port, e.g. ``https://fw1.example:8443``.
        api_token: the REST API admin's token (System > Administrators > REST API Admin).
        vdom: the virtual domain to act in; ``root`` on single-VDOM units.
        timeout_seconds: connect/read/write/pool timeout for each request.
        verify_tls: check the management certificate; turn off only for lab units.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_FORTIGATE_")

    base_url: str
    api_token: SecretStr
    vdom: str = "root"
    timeout_seconds: float = 10
    verify_tls: bool = True


def connect(
    settings: FortiGateSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An ``AsyncClient`` for the FortiGate in ``settings``.

    The token goes in the ``Authorization`` header rather than the ``access_token``
    query parameter: the query form needs ``rest-api-key-url-query`` enabled on the
    unit and would put the token in access logs.

    Args:
        settings: base URL, token, VDOM, timeouts.
        transport: replaces the network (a simulator's in-process transport in tests).
    """
    return httpx.AsyncClient(
        base_url=settings.base_url,
        headers={
            "Authorization": f"Bearer {settings.api_token.get_secret_value()}",
            "Accept": "application/json",
        },
        # The adapter reads the VDOM back from here, because the plugin wiring hands
        # adapters only the client.
        params={"vdom": settings.vdom},
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(settings.verify_tls),
        transport=transport,
    )


def _describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, vendor_code)`` from a FortiOS error envelope (raises ValueError if none)."""
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not a FortiOS envelope")
    code = body.get("error")
    message = body.get("cli_error") or f"FortiOS status {body.get('status')!r}"
    return str(message), (None if code is None else str(code))


def _lockout() -> AuthError:
    # FortiOS answers 429 when the source has hit the failed-login threshold
    # ("Access temporarily blocked: maximum failed authentications reached"). Retrying
    # would only extend the lockout, so this is an auth failure, never RateLimited.
    return AuthError(
        "access temporarily blocked: maximum failed authentications reached",
        vendor=VENDOR,
        status_code=429,
    )


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    vdom: str,
    params: dict[str, str] | None = None,
    json: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send one FortiOS request and return its success envelope.

    Args:
        client: from :func:`connect`.
        method: HTTP method.
        path: path under the base URL (``/api/v2/monitor/user/banned``).
        vdom: sent as the ``vdom`` query parameter on every call.
        params: further query parameters.
        json: JSON body.

    Raises:
        AuthError: 401/403, or 429 (auth lockout) in the HTTP status or the envelope.
        VendorUnavailable: 5xx, or a 200 whose body is not a FortiOS envelope.
        IntegrationError: another subclass, per :func:`integrations.http.error_for_status`.
    """
    query = {"vdom": vdom, **(params or {})}
    response = await send(
        client,
        method,
        path,
        vendor=VENDOR,
        ok=(200, 429),
        describe=_describe,
        params=query,
        json=json,
    )
    if response.status_code == 429:
        raise _lockout()
    try:
        envelope = response.json()
    except ValueError as exc:
        # A captive portal or reverse proxy answering 200 with HTML is not FortiOS saying yes.
        raise VendorUnavailable(
            f"{method} {path}: response is not JSON", vendor=VENDOR, status_code=200
        ) from exc
    if not isinstance(envelope, dict):
        raise VendorUnavailable(
            f"{method} {path}: response is not a FortiOS envelope", vendor=VENDOR, status_code=200
        )
    if envelope.get("status") != "success":
        raise _envelope_error(response, envelope, method, path)
    return envelope


def _envelope_error(
    response: httpx.Response, envelope: dict[str, Any], method: str, path: str
) -> IntegrationError:
    """The error a 200 carrying ``"status": "error"`` means, judged by its ``http_status``."""
    inner = envelope.get("http_status")
    inner_status = inner if isinstance(inner, int) and inner >= 400 else 400
    if inner_status == 429:
        return _lockout()
    code = envelope.get("error")
    # Map the envelope's own status as if it were the HTTP one, so both paths agree.
    proxy = httpx.Response(inner_status, headers=response.headers, request=response.request)
    return error_for_status(
        proxy,
        vendor=VENDOR,
        message=f"{method} {path}: FortiOS status {envelope.get('status')!r}",
        vendor_code=None if code is None else str(code),
    )
