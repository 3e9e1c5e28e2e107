"""PAN-OS XML API settings, client with key handling, and the ``<response>`` reader.

PAN-OS answers HTTP 200 for most failures, so :func:`error_for` maps the XML ``code``
(the reference's error-code table) onto the error tree; HTTP statuses still go through
:func:`integrations.http.send`.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncGenerator
from typing import Any, Self

import httpx
from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations.errors import (
    AuthError,
    IntegrationError,
    NotFoundError,
    RejectedError,
    VendorUnavailable,
)
from integrations.http import error_for_status, send, tls_verify

VENDOR = "panos"
API = "/api/"
DEFAULT_TAG = "stanch-block"

# Reference §2 error-code table, read for what a caller can do about each code.
AUTH_CODES = frozenset({"403", "16"})  # invalid key/credentials; role lacks the right
TRANSIENT_CODES = frozenset({"2", "3", "4", "5", "11", "14", "21"})  # internal; "not possible now"
NOT_FOUND_CODES = frozenset({"7", "13"})  # object not present / not found
# Everything else (400, 1 unknown command, 6 bad xpath, 8, 10, 12, 15 denied, 17, 18) is
# the device refusing this request as written: RejectedError.


class PanosSettings(BaseSettings):
    """Where and how to reach one PAN-OS firewall, read from ``STANCH_PANOS_*``.

    Give either ``api_key`` or ``username`` and ``password``; with credentials the client
    generates a key on first use (``type=keygen``) and keeps it.

    Attributes:
        base_url: scheme and host of the management interface, e.g. ``https://fw1.example``.
        api_key: an XML API key.
        username: admin for ``type=keygen`` when no key is given.
        password: that admin's password.
        tag: the tag the blocking Dynamic Address Group matches.
        timeout_seconds: connect/read/write/pool timeout for each request.
        verify_tls: check the management certificate; turn off only for lab units.
    """

    model_config = SettingsConfigDict(env_prefix="STANCH_PANOS_")

    base_url: str
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    tag: str = DEFAULT_TAG
    timeout_seconds: float = 10
    verify_tls: bool = True

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.api_key is None and not (self.username and self.password):
            raise ValueError("set STANCH_PANOS_API_KEY, or USERNAME and PASSWORD for keygen")
        if not self.tag:
            raise ValueError("tag must not be empty")
        return self


class PanosClient(httpx.AsyncClient):
    """An ``AsyncClient`` that also carries the DAG tag from the settings.

    The plugin wiring hands adapters only the client, so the tag travels with it.
    """

    def __init__(self, *, tag: str = DEFAULT_TAG, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag = tag


class PanosKeyAuth(httpx.Auth):
    """Sends the API key as ``X-PAN-KEY``, generating it with ``type=keygen`` if needed.

    The header keeps the key out of URLs and so out of proxy and access logs. With
    credentials, a key the device rejects (it may invalidate keys when another is
    generated for the same admin) is replaced once by a fresh keygen.

    Args:
        api_key: a fixed key; no keygen is ever sent.
        username: admin for keygen.
        password: that admin's password.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._key = api_key
        self._credentials = (username, password) if username and password else None
        self._lock = asyncio.Lock()
        self.keygens = 0

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise RuntimeError("stanch adapters are async; use httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        key = self._key
        if key is None:
            async with self._lock:
                key = self._key
                if key is None:
                    key = await read_key((yield self._keygen(request)))
                    self._key = key
                    self.keygens += 1
        request.headers["X-PAN-KEY"] = key
        response = yield request
        if self._credentials is None:
            return
        # Overriding async_auth_flow means reading the body ourselves.
        await response.aread()
        if not _is_bad_key(response):
            return
        async with self._lock:
            current = self._key
            if current is None or current == key:  # nobody replaced it meanwhile
                current = await read_key((yield self._keygen(request)))
                self._key = current
                self.keygens += 1
        request.headers["X-PAN-KEY"] = current
        yield request

    def _keygen(self, request: httpx.Request) -> httpx.Request:
        if self._credentials is None:
            raise AuthError("no API key and no credentials for keygen", vendor=VENDOR)
        user, password = self._credentials
        # POST, so the password travels in the body and never in a URL.
        return httpx.Request(
            "POST",
            request.url.copy_with(query=None),
            data={"type": "keygen", "user": user, "password": password},
            extensions={"timeout": request.extensions.get("timeout", {})},
        )


async def read_key(response: httpx.Response) -> str:
    """The key from a keygen response (``./result/key``), or the mapped error.

    Raises:
        AuthError: bad credentials (code 403).
        IntegrationError: another failure, by HTTP status or XML code.
    """
    await response.aread()
    if response.status_code != 200:
        # PAN-OS may say "Invalid Credential" with HTTP 403 as well as with 200: keep the
        # device's words either way, so the operator reads what the firewall said.
        try:
            root = parse(response)
        except VendorUnavailable:
            raise error_for_status(response, vendor=VENDOR, message="keygen failed") from None
        raise error_for_status(
            response,
            vendor=VENDOR,
            message=f"keygen: {message(root)}",
            vendor_code=root.get("code"),
        )
    root = parse(response)
    key = root.findtext("./result/key")
    if root.get("status") != "success" or not key:
        raise error_for(root, status_code=response.status_code, what="keygen")
    return key


def _is_bad_key(response: httpx.Response) -> bool:
    try:
        root = parse(response)
    except VendorUnavailable:
        return False
    return root.get("status") == "error" and root.get("code") == "403"


def parse(response: httpx.Response) -> ET.Element:
    """The ``<response>`` element of a PAN-OS answer.

    Raises:
        VendorUnavailable: the body is not a PAN-OS XML response (a proxy page).
    """
    try:
        # Only the configured firewall's own answers are parsed here, never XML
        # relayed from elsewhere, which is why the stdlib parser is acceptable.
        root = ET.fromstring(response.content)  # noqa: S314
    except ET.ParseError as exc:
        raise VendorUnavailable(
            "response is not XML", vendor=VENDOR, status_code=response.status_code
        ) from exc
    if root.tag != "response":
        raise VendorUnavailable(
            f"expected <response>, got <{root.tag}>",
            vendor=VENDOR,
            status_code=response.status_code,
        )
    return root


def entry_messages(root: ET.Element) -> list[str]:
    """Per-entry user-id messages (``./msg/line/uid-response/payload/*/entry/@message``)."""
    return [
        entry.get("message", "")
        for entry in root.findall("./msg/line/uid-response/payload/*/entry")
    ]


def message(root: ET.Element) -> str:
    """The response's message, looked for in the order pan-python uses (reference §2)."""
    if entries := entry_messages(root):
        return "; ".join(entries)
    for path in ("./msg/line", "./result/msg/line", "./result/msg", "./msg"):
        found = root.find(path)
        if found is not None:
            text = " ".join(t.strip() for t in found.itertext() if t.strip())
            if text:
                return text
    lines = [line.text or "" for line in root.findall("./result/job/details/line")]
    return "; ".join(lines) or f"status={root.get('status')}"


def error_for(root: ET.Element, *, status_code: int, what: str) -> IntegrationError:
    """The error an XML ``status="error"`` response means, by its ``code``."""
    code = root.get("code")
    text = f"{what}: {message(root)}"
    kwargs: dict[str, Any] = {"vendor": VENDOR, "status_code": status_code, "vendor_code": code}
    if code in AUTH_CODES:
        return AuthError(text, **kwargs)
    if code in TRANSIENT_CODES:
        return VendorUnavailable(text, **kwargs)
    if code in NOT_FOUND_CODES:
        return NotFoundError(text, **kwargs)
    return RejectedError(text, **kwargs)


def _describe(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, code)`` from an XML error body on a non-200 status."""
    try:
        root = parse(response)
    except VendorUnavailable as exc:
        raise ValueError("not a PAN-OS response") from exc
    return message(root), root.get("code")


async def request(client: httpx.AsyncClient, params: dict[str, str]) -> ET.Element:
    """POST one XML API request; return its ``<response>`` whatever its ``@status``.

    Parameters go in the form body (reference §1: POST for uid-messages and long ``cmd``
    XML), so nothing but the path reaches the URL.

    Raises:
        VendorTimeout: no answer in time.
        VendorUnavailable: 5xx, or a body that is not PAN-OS XML.
        IntegrationError: another non-200 status, per :func:`error_for_status`.
    """
    # Every XML API request is a POST; only user-id messages and config/commit requests
    # change the firewall (op and keygen requests read).
    changes = params.get("type") not in ("op", "keygen")
    response = await send(
        client, "POST", API, vendor=VENDOR, describe=_describe, data=params, mutates=changes
    )
    return parse(response)


async def call(client: httpx.AsyncClient, params: dict[str, str], *, what: str) -> ET.Element:
    """Like :func:`request`, but an XML ``status="error"`` raises :func:`error_for`'s error."""
    root = await request(client, params)
    if root.get("status") != "success":
        raise error_for(root, status_code=200, what=what)
    return root


def connect(
    settings: PanosSettings, transport: httpx.AsyncBaseTransport | None = None
) -> PanosClient:
    """A client for the firewall in ``settings``, authenticating with ``X-PAN-KEY``.

    Args:
        settings: base URL, key or keygen credentials, tag, timeouts.
        transport: replaces the network (a simulator's in-process transport in tests).
    """
    auth = PanosKeyAuth(
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
    )
    return PanosClient(
        tag=settings.tag,
        base_url=settings.base_url,
        auth=auth,
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(settings.verify_tls),
        transport=transport,
    )
