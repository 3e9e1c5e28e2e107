"""Okta settings, the authenticated ``httpx.AsyncClient``, and the one way adapters call Okta.

Two auth modes: a static API token (``Authorization: SSWS <token>``) or OAuth 2.0 client
credentials with a ``private_key_jwt`` client assertion exchanged at the org authorization
server for a Bearer token.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from integrations.errors import AuthError
from integrations.http import (
    CachedBearerAuth,
    TokenCache,
    epoch_header,
    read_token,
    send,
    tls_verify,
)

VENDOR = "okta"
TOKEN_PATH = "/oauth2/v1/token"  # noqa: S105 - an endpoint path, not a credential
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 300
"""Okta accepts assertions valid for up to an hour; five minutes limits replay of a leaked one."""

# Okta says when the rate-limit window resets (epoch seconds) and never sends Retry-After.
OKTA_RETRY_AFTER = epoch_header("X-Rate-Limit-Reset")

# E0000038 "This operation is not allowed in the user's current status." comes with 403:
# a refusal in the user's state, not a credentials failure.
OKTA_CONFLICT_CODES = frozenset({"E0000038"})


class OktaSettings(BaseSettings):
    """How to reach one Okta org, read from ``STANCH_OKTA_<FIELD>``.

    Attributes:
        base_url: the org URL (``https://acme.okta.com``), not the ``-admin`` console URL.
        auth_mode: ``ssws`` (API token) or ``private_key_jwt`` (OAuth 2.0 service app).
        api_token: the SSWS API token (``ssws`` mode).
        client_id: the service app's client id (``private_key_jwt`` mode).
        private_key_pem: the PEM RSA private key whose public JWK is registered on the app.
        key_id: the ``kid`` of that JWK; needed when the app has more than one key.
        scopes: OAuth scopes requested (``private_key_jwt`` mode); from the environment
            space- or comma-separated (``okta.users.manage okta.logs.read``).
        timeout_seconds: connect/read/write/pool timeout of every request.
    """

    model_config = SettingsConfigDict(
        env_prefix="STANCH_OKTA_",
        extra="ignore",
        # Validation errors would otherwise echo the raw input, secrets included.
        hide_input_in_errors=True,
    )

    base_url: str
    auth_mode: Literal["ssws", "private_key_jwt"] = "ssws"
    api_token: SecretStr | None = None
    client_id: str | None = None
    private_key_pem: SecretStr | None = None
    key_id: str | None = None
    # NoDecode: the environment gives scopes the way OAuth writes them, space-separated.
    scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["okta.users.manage", "okta.logs.read"]
    )
    timeout_seconds: float = Field(default=10, gt=0)

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("base_url")
    @classmethod
    def _org_url(cls, value: str) -> str:
        url = httpx.URL(value.strip())
        if url.scheme not in ("https", "http") or not url.host:
            raise ValueError("base_url must be the Okta org URL, e.g. https://acme.okta.com")
        if url.host.split(".")[0].endswith("-admin"):
            # The Admin Console host serves the UI, not the management API.
            raise ValueError("base_url must be the org URL, not the -admin console URL")
        return str(url.copy_with(path="/", query=None, fragment=None)).rstrip("/")

    @model_validator(mode="after")
    def _credentials_for_mode(self) -> OktaSettings:
        if self.auth_mode == "ssws":
            if self.api_token is None or not self.api_token.get_secret_value():
                raise ValueError("auth_mode 'ssws' needs api_token (STANCH_OKTA_API_TOKEN)")
            return self
        for name in ("client_id", "private_key_pem"):
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not value:
                raise ValueError(
                    f"auth_mode 'private_key_jwt' needs {name} (STANCH_OKTA_{name.upper()})"
                )
        if not self.scopes:
            raise ValueError("auth_mode 'private_key_jwt' needs at least one scope in scopes")
        load_private_key(self)
        return self


def load_private_key(settings: OktaSettings) -> rsa.RSAPrivateKey:
    """The settings' RSA private key.

    Raises:
        ValueError: the PEM is absent, unreadable, or not an RSA key (the key is not quoted).
    """
    if settings.private_key_pem is None:
        raise ValueError("private_key_pem is not set")
    try:
        key = serialization.load_pem_private_key(
            settings.private_key_pem.get_secret_value().encode(), password=None
        )
    except (ValueError, TypeError) as exc:
        raise ValueError("private_key_pem is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private_key_pem must be an RSA key (Okta signs with RS256)")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def client_assertion(
    settings: OktaSettings, key: rsa.RSAPrivateKey, *, now: float | None = None
) -> str:
    """A signed RS256 JWT authenticating the service app at the token endpoint.

    Args:
        settings: supplies ``client_id`` (``iss`` and ``sub``), ``key_id`` and the org URL.
        key: the app's private key.
        now: the issue time (epoch seconds), for tests.

    Returns:
        The compact JWT: short-lived (``exp = iat + 300``), unique ``jti``, ``aud`` = the
        org's token endpoint.
    """
    issued = int(time.time() if now is None else now)
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if settings.key_id:
        header["kid"] = settings.key_id
    claims = {
        "iss": settings.client_id,
        "sub": settings.client_id,
        "aud": f"{settings.base_url}{TOKEN_PATH}",
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME_SECONDS,
        # Okta rejects a reused jti, so each token request needs a fresh assertion.
        "jti": uuid.uuid4().hex,
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def describe_error(response: httpx.Response) -> tuple[str | None, str | None]:
    """``(message, vendor_code)`` from Okta's error envelope or the OAuth error body.

    Okta's management API answers ``{"errorCode", "errorSummary", "errorCauses": [...]}``;
    the token endpoint answers ``{"error", "error_description"}``.

    Raises:
        ValueError: the body is not JSON (``send`` then falls back to the status alone).
    """
    body = response.json()
    if not isinstance(body, dict):
        return None, None
    where = f"{response.request.method} {response.request.url.path}"
    if "errorCode" in body or "errorSummary" in body:
        message = str(body.get("errorSummary") or "").strip()
        causes = [
            str(cause["errorSummary"])
            for cause in body.get("errorCauses") or []
            if isinstance(cause, dict) and cause.get("errorSummary")
        ]
        if causes:
            message = f"{message} ({'; '.join(causes)})" if message else "; ".join(causes)
        if body.get("errorId"):
            message += f" [errorId {body['errorId']}]"
        code = body.get("errorCode")
        return f"{where}: {message}", str(code) if code else None
    if "error" in body:
        text = body.get("error_description") or body["error"]
        return f"{where}: {text}", str(body["error"])
    return None, None


async def okta_send(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """:func:`integrations.http.send` with Okta's rate-limit header and error envelope."""
    return await send(
        client,
        method,
        url,
        vendor=VENDOR,
        retry_after=OKTA_RETRY_AFTER,
        describe=describe_error,
        conflict_codes=OKTA_CONFLICT_CODES,
        **kwargs,
    )


class _SSWSAuth(httpx.Auth):
    """Adds ``Authorization: SSWS <token>`` per request, so the token never sits in
    ``client.headers`` where a debug dump of the client would show it."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise RuntimeError("stanch adapters are async; use httpx.AsyncClient")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"SSWS {self._token.get_secret_value()}"
        yield request


def connect(
    settings: OktaSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` every Okta adapter takes: org URL, auth, timeouts.

    Args:
        settings: the org and credentials.
        transport: replaces the network (a simulator's in-process transport in tests).

    Returns:
        A client sending ``Accept: application/json`` and either ``SSWS`` or a cached
        ``Bearer`` token obtained with a ``private_key_jwt`` assertion.
    """
    client = httpx.AsyncClient(
        base_url=settings.base_url,
        transport=transport,
        timeout=httpx.Timeout(settings.timeout_seconds),
        verify=tls_verify(),
        headers={"Accept": "application/json", "User-Agent": "stanch-okta"},
    )
    if settings.auth_mode == "ssws":
        assert settings.api_token is not None  # the settings validator guarantees it
        client.auth = _SSWSAuth(settings.api_token)
        return client

    key = load_private_key(settings)

    async def fetch() -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": " ".join(settings.scopes),
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(settings, key),
        }
        # auth=None: the token request authenticates with the assertion, not a token.
        response = await okta_send(
            client, "POST", TOKEN_PATH, data=form, auth=None, ok=(200,), mutates=False
        )
        token, lifetime, token_type = read_token(response, vendor=VENDOR, default_lifetime=3600)
        if token_type.lower() != "bearer":
            # A DPoP-bound token is useless without a per-request proof, which we do not send.
            raise AuthError(
                f"token endpoint issued a {token_type} token; turn off 'Require DPoP' "
                "on the Okta service app",
                vendor=VENDOR,
            )
        return token, lifetime

    client.auth = CachedBearerAuth(TokenCache(fetch))
    return client
