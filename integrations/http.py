"""The one place HTTP outcomes become :mod:`integrations.errors`, plus OAuth token caching.

Adapters send every vendor call through :func:`send`, which maps transport failures and
non-success statuses onto the error tree. Vendors disagree on how they say "wait": each
adapter passes the parser for its rate-limit header (:func:`seconds_header`,
:func:`epoch_header`), and the vendor codes that mean "not in the target's current state"
(a :class:`~integrations.errors.ConflictError`, whatever the status: Okta says it with a
403). :func:`watching` lets the caller learn which state-changing requests left and how
they were answered, so an answer lost after the vendor acted can be told from a refusal.
Every vendor client verifies TLS with one shared context (:func:`tls_verify`).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpx

from integrations.errors import (
    AuthError,
    ConflictError,
    IntegrationError,
    NotFoundError,
    RateLimited,
    RejectedError,
    VendorTimeout,
    VendorUnavailable,
)

RetryAfterParser = Callable[[httpx.Headers], float | None]
"""Reads how many seconds a throttled caller should wait, or ``None`` if unsaid."""

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Mutations:
    """What the state-changing requests sent in one context did (see :func:`watching`).

    Args:
        before_send: awaited just before each such request leaves, so the caller can
            record that it did (a crash or a lost answer after it is then known).

    Attributes:
        maybe_applied: a state-changing request got a 2xx, a 5xx or no answer at all, so
            the vendor may have acted on it. Only a 4xx (a refusal, a 429) rules that out.
    """

    def __init__(self, before_send: Callable[[], Awaitable[None]]) -> None:
        self._before_send = before_send
        self.maybe_applied = False

    async def sending(self) -> None:
        """A state-changing request is about to leave."""
        await self._before_send()

    def answered(self, status: int | None) -> None:
        """Its answer: an HTTP status, or ``None`` when none came."""
        if status is None or not 400 <= status < 500:
            self.maybe_applied = True


_WATCH: ContextVar[Mutations | None] = ContextVar("stanch_mutations", default=None)


@contextmanager
def watching(mutations: Mutations) -> Iterator[Mutations]:
    """Report every state-changing request :func:`send` makes in this context to ``mutations``.

    The flow layer uses it to tell an answer lost after the vendor may have acted from one
    lost before anything was sent: a retry that then finds the state already in place
    must not disown it.
    """
    token = _WATCH.set(mutations)
    try:
        yield mutations
    finally:
        _WATCH.reset(token)


def tls_verify(verify: bool = True) -> ssl.SSLContext | bool:
    """The ``verify=`` for a vendor client: one certificate-checking context per process.

    httpx builds a new SSL context for every client it creates, loading the whole CA
    bundle each time (about 35 ms); a flow run makes one client per vendor. The context
    is the one httpx would build (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's
    bundle), built once per value of those variables and shared: clients only read it.
    ``False`` (a lab unit's self-signed certificate) is passed through.
    """
    if not verify:
        return False
    return _verifying_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _verifying_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # The arguments are the cache key: httpx reads the same two variables itself.
    return httpx.create_ssl_context(verify=True, trust_env=True)


def seconds_header(name: str = "Retry-After") -> RetryAfterParser:
    """Parse a header holding delta-seconds or an HTTP date (RFC 9110 ``Retry-After``)."""

    def parse(headers: httpx.Headers) -> float | None:
        raw = headers.get(name)
        if raw is None:
            return None
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    return parse


def epoch_header(name: str) -> RetryAfterParser:
    """Parse a header holding the Unix time at which the caller may try again.

    CrowdStrike (``X-Ratelimit-Retryafter``) and Okta (``X-Rate-Limit-Reset``) say when,
    not how long.
    """

    def parse(headers: httpx.Headers) -> float | None:
        raw = headers.get(name)
        if raw is None:
            return None
        try:
            return max(0.0, float(raw.strip()) - time.time())
        except ValueError:
            return None

    return parse


def error_for_status(
    response: httpx.Response,
    *,
    vendor: str,
    message: str | None = None,
    vendor_code: str | None = None,
    retry_after: RetryAfterParser | None = None,
    conflict_codes: Collection[str] = (),
) -> IntegrationError:
    """The error a non-success response means, by status code and the vendor's own code.

    A vendor code in ``conflict_codes`` is a refusal in the target's current state
    (:class:`ConflictError`) whatever the status, so that only credential failures are
    :class:`AuthError`; a 409 is one too.
    """
    status = response.status_code
    text = message or f"{response.request.method} {response.request.url.path} failed"
    kwargs: dict[str, Any] = {"vendor": vendor, "status_code": status, "vendor_code": vendor_code}
    if (vendor_code is not None and vendor_code in conflict_codes) or status == 409:
        return ConflictError(text, **kwargs)
    if status == 429:
        wait = (retry_after or seconds_header())(response.headers)
        return RateLimited(text, retry_after=wait, **kwargs)
    if status in (401, 403):
        return AuthError(text, **kwargs)
    if status == 404:
        return NotFoundError(text, **kwargs)
    if status >= 500 or status == 408:
        return VendorUnavailable(text, **kwargs)
    return RejectedError(text, **kwargs)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    vendor: str,
    ok: Collection[int] = (200, 201, 202, 204),
    retry_after: RetryAfterParser | None = None,
    describe: Callable[[httpx.Response], tuple[str | None, str | None]] | None = None,
    conflict_codes: Collection[str] = (),
    mutates: bool | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send one vendor request; return the response if its status is in ``ok``.

    Args:
        client: the adapter's injected client (base URL, auth and timeouts already set).
        method: HTTP method.
        url: path relative to the client's base URL.
        vendor: adapter name, carried on any error raised.
        ok: statuses the caller handles itself; anything else raises.
        retry_after: how this vendor says when to retry after a 429.
        describe: pulls ``(message, vendor_code)`` out of an error body, so errors
            carry the vendor's own words.
        conflict_codes: vendor codes that mean "not in the target's current state".
        mutates: whether the request may change vendor state; by default, any method
            but GET, HEAD and OPTIONS (token requests and PAN-OS reads say ``False``).
        **kwargs: passed to :meth:`httpx.AsyncClient.request`.

    Raises:
        VendorTimeout: the request timed out or the connection failed.
        IntegrationError: a subclass chosen by :func:`error_for_status`.
    """
    watch = _WATCH.get()
    if watch is not None and not (
        method.upper() not in _SAFE_METHODS if mutates is None else mutates
    ):
        watch = None
    if watch is not None:
        await watch.sending()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        if watch is not None:
            watch.answered(None)
        raise VendorTimeout(f"{method} {url} timed out", vendor=vendor) from exc
    except httpx.TransportError as exc:
        if watch is not None:
            watch.answered(None)
        raise VendorTimeout(f"{method} {url}: {type(exc).__name__}", vendor=vendor) from exc
    if watch is not None:
        watch.answered(response.status_code)
    if response.status_code in ok:
        return response
    message, code = (None, None)
    if describe is not None:
        try:
            message, code = describe(response)
        except ValueError:
            # An error body that is not the vendor's documented envelope (a proxy's HTML page).
            message, code = None, None
    raise error_for_status(
        response,
        vendor=vendor,
        message=message,
        vendor_code=code,
        retry_after=retry_after,
        conflict_codes=conflict_codes,
    )


def read_token(
    response: httpx.Response, *, vendor: str, default_lifetime: float
) -> tuple[str, float, str]:
    """``(access_token, expires_in, token_type)`` from an OAuth 2.0 token response.

    Raises:
        VendorUnavailable: the body is not the RFC 6749 token JSON (a 2xx that carries no
            token is a vendor fault, not a credentials problem).
    """
    try:
        body = response.json()
        token = body["access_token"]
        lifetime = float(body.get("expires_in", default_lifetime))
        token_type = str(body.get("token_type", "Bearer"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VendorUnavailable(
            "token response carries no access_token",
            vendor=vendor,
            status_code=response.status_code,
        ) from exc
    if not isinstance(token, str) or not token:
        raise VendorUnavailable(
            "token response carries no access_token",
            vendor=vendor,
            status_code=response.status_code,
        )
    return token, lifetime, token_type


class TokenCache:
    """Holds one bearer token and refreshes it shortly before it expires.

    Concurrent callers share one fetch: the lock makes the second caller wait for the
    first caller's token instead of requesting its own.

    Args:
        fetch: coroutine returning ``(token, lifetime_seconds)``.
        refresh_margin: seconds before expiry at which the token counts as stale.
        clock: monotonic time source, injectable for tests.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[tuple[str, float]]],
        *,
        refresh_margin: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self) -> str:
        """A token valid for at least ``refresh_margin`` more seconds."""
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._margin:
                token, lifetime = await self._fetch()
                self.fetches += 1
                self._token = token
                self._expires_at = self._clock() + lifetime
            return self._token

    def invalidate(self) -> None:
        """Forget the token (after a 401), so the next :meth:`get` fetches a new one."""
        self._token = None


class CachedBearerAuth(httpx.Auth):
    """httpx auth that adds ``Authorization: <scheme> <token>`` from a :class:`TokenCache`.

    On a 401 it drops the cached token and retries the request once with a fresh one,
    because vendors revoke tokens before their stated lifetime (rotation, admin action).
    """

    def __init__(self, cache: TokenCache, *, scheme: str = "Bearer") -> None:
        self._cache = cache
        self._scheme = scheme

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise RuntimeError("stanch adapters are async; use httpx.AsyncClient")

    async def async_auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"{self._scheme} {await self._cache.get()}"
        response = yield request
        if response.status_code == 401:
            self._cache.invalidate()
            request.headers["Authorization"] = f"{self._scheme} {await self._cache.get()}"
            yield request
