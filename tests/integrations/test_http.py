"""integrations.http: rate-limit header parsing, status mapping, send(), token caching."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable

import httpx
import pytest

from integrations.errors import (
    AuthError,
    ConflictError,
    IntegrationError,
    NotFoundError,
    PermanentError,
    RateLimited,
    RejectedError,
    TransientError,
    VendorTimeout,
    VendorUnavailable,
)
from integrations.http import (
    CachedBearerAuth,
    TokenCache,
    epoch_header,
    error_for_status,
    seconds_header,
    send,
)

BASE = "https://vendor.test"
SECRET = "sk-live-do-not-leak-7f3a9c"


def response(
    status: int, *, headers: dict[str, str] | None = None, **kwargs: object
) -> httpx.Response:
    request = httpx.Request("POST", f"{BASE}/api/v1/things/42")
    return httpx.Response(status, headers=headers, request=request, **kwargs)  # type: ignore[arg-type]


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=BASE)


# seconds_header ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("120", 120.0), (" 7 ", 7.0), ("0", 0.0)])
def test_seconds_header_reads_delta_seconds(raw: str, expected: float) -> None:
    """Given Retry-After in delta-seconds
    When it is parsed
    Then the number of seconds comes back."""
    assert seconds_header()(httpx.Headers({"Retry-After": raw})) == expected


def test_seconds_header_reads_http_date_in_the_future() -> None:
    """Given Retry-After as an HTTP-date 90 s ahead
    When it is parsed
    Then about 90 seconds come back."""
    when = email.utils.formatdate(time.time() + 90, usegmt=True)
    wait = seconds_header()(httpx.Headers({"Retry-After": when}))
    assert wait is not None
    assert 85 <= wait <= 91


def test_seconds_header_http_date_in_the_past_is_zero() -> None:
    """Given Retry-After as an HTTP-date an hour ago
    When it is parsed
    Then the wait is 0, never negative."""
    when = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert seconds_header()(httpx.Headers({"Retry-After": when})) == 0.0


@pytest.mark.parametrize("raw", ["soon", "", "12 parsecs", "Mon, 99 Foo 2026"])
def test_seconds_header_garbage_is_none(raw: str) -> None:
    """Given a Retry-After that is neither seconds nor a date
    When it is parsed
    Then None (unsaid) comes back."""
    assert seconds_header()(httpx.Headers({"Retry-After": raw})) is None


def test_seconds_header_negative_is_zero() -> None:
    """Given Retry-After: -5
    When it is parsed
    Then the wait is clamped to 0."""
    assert seconds_header()(httpx.Headers({"Retry-After": "-5"})) == 0.0


def test_seconds_header_missing_and_custom_name() -> None:
    """Given a parser for a custom header name
    When the header is absent, or only the default name is present
    Then None; when the custom header is present, its value."""
    parse = seconds_header("X-Wait")
    assert parse(httpx.Headers({})) is None
    assert parse(httpx.Headers({"Retry-After": "3"})) is None
    assert parse(httpx.Headers({"x-wait": "4"})) == 4.0


# epoch_header -----------------------------------------------------------------------------


def test_epoch_header_future_epoch_is_positive_seconds() -> None:
    """Given X-Rate-Limit-Reset 30 s in the future (Unix time)
    When it is parsed
    Then about 30 seconds come back."""
    parse = epoch_header("X-Rate-Limit-Reset")
    wait = parse(httpx.Headers({"X-Rate-Limit-Reset": str(int(time.time()) + 30)}))
    assert wait is not None
    assert 28 <= wait <= 31


def test_epoch_header_past_epoch_is_zero() -> None:
    """Given a reset time already past
    When it is parsed
    Then the wait is 0."""
    parse = epoch_header("X-Rate-Limit-Reset")
    assert parse(httpx.Headers({"X-Rate-Limit-Reset": str(int(time.time()) - 100)})) == 0.0


@pytest.mark.parametrize("raw", ["tomorrow", "", "1.2.3"])
def test_epoch_header_garbage_is_none(raw: str) -> None:
    """Given a reset header that is not a number
    When it is parsed
    Then None comes back."""
    assert (
        epoch_header("X-Ratelimit-Retryafter")(httpx.Headers({"X-Ratelimit-Retryafter": raw}))
        is None
    )


def test_epoch_header_missing_is_none() -> None:
    """Given no reset header
    When it is parsed
    Then None comes back."""
    assert epoch_header("X-Rate-Limit-Reset")(httpx.Headers({"Retry-After": "5"})) is None


# error_for_status -------------------------------------------------------------------------


def test_429_is_rate_limited_with_wait_from_the_given_parser() -> None:
    """Given a 429 carrying the vendor's epoch header and a contradicting Retry-After
    When it is mapped with that vendor's parser
    Then RateLimited's retry_after comes from the vendor header."""
    reset = str(int(time.time()) + 40)
    error = error_for_status(
        response(429, headers={"X-Rate-Limit-Reset": reset, "Retry-After": "1"}),
        vendor="okta",
        retry_after=epoch_header("X-Rate-Limit-Reset"),
    )
    assert isinstance(error, RateLimited)
    assert isinstance(error, TransientError)
    assert error.retry_after is not None
    assert 38 <= error.retry_after <= 41
    assert (error.vendor, error.status_code) == ("okta", 429)


def test_429_defaults_to_retry_after_seconds() -> None:
    """Given a 429 with Retry-After: 12 and no parser
    When it is mapped
    Then retry_after is 12; without any header it is None."""
    error = error_for_status(response(429, headers={"Retry-After": "12"}), vendor="v")
    assert isinstance(error, RateLimited)
    assert error.retry_after == 12.0
    bare = error_for_status(response(429), vendor="v")
    assert isinstance(bare, RateLimited)
    assert bare.retry_after is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (400, RejectedError),
        (409, ConflictError),
        (422, RejectedError),
        (500, VendorUnavailable),
        (502, VendorUnavailable),
        (503, VendorUnavailable),
        (408, VendorUnavailable),
    ],
)
def test_status_maps_to_error_type(status: int, kind: type[IntegrationError]) -> None:
    """Given a non-success response
    When it is mapped
    Then the error type follows the status, and carries vendor and status_code."""
    error = error_for_status(response(status), vendor="acme", vendor_code="E42")
    assert type(error) is kind
    assert error.vendor == "acme"
    assert error.status_code == status
    assert error.vendor_code == "E42"
    transient = status >= 500 or status == 408
    assert isinstance(error, TransientError) is transient
    assert isinstance(error, PermanentError) is not transient


@pytest.mark.parametrize("status", [400, 403])
def test_a_state_refusal_is_a_conflict_not_an_auth_error(status: int) -> None:
    """Given a vendor code the adapter names as "not allowed in the target's current state"
    (Okta answers E0000038 with 403),
    When it is mapped,
    Then it is a ConflictError (a RejectedError), never an AuthError: operators look at
    credentials when they read AuthError."""
    error = error_for_status(
        response(status), vendor="okta", vendor_code="E0000038", conflict_codes={"E0000038"}
    )
    assert type(error) is ConflictError
    assert isinstance(error, RejectedError) and not isinstance(error, AuthError)
    plain = error_for_status(response(403), vendor="okta", vendor_code="E0000006")
    assert type(plain) is AuthError


def test_error_message_defaults_to_method_and_path() -> None:
    """Given no message
    When a 404 is mapped
    Then str() names vendor, status, method and path (not the host or query)."""
    error = error_for_status(response(404), vendor="acme")
    assert str(error) == "acme HTTP 404: POST /api/v1/things/42 failed"


# send() -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raised",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("read timed out")],
    ids=["connect-error", "read-timeout"],
)
async def test_send_maps_transport_failures_to_vendor_timeout(raised: httpx.TransportError) -> None:
    """Given a transport that fails to connect or times out
    When send() is called with a secret in its headers
    Then VendorTimeout is raised, chained to the httpx error, without the secret."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    async with client_for(handler) as client:
        with pytest.raises(VendorTimeout) as exc:
            await send(
                client,
                "GET",
                "/api/things",
                vendor="acme",
                headers={"Authorization": f"Bearer {SECRET}"},
            )
    assert exc.value.__cause__ is raised
    assert exc.value.vendor == "acme"
    assert exc.value.status_code is None
    assert isinstance(exc.value, TransientError)
    assert "GET /api/things" in str(exc.value)
    assert SECRET not in str(exc.value)


async def test_send_returns_statuses_in_ok() -> None:
    """Given a 404 that the caller lists in ok
    When send() is called
    Then the response is returned instead of raised."""
    async with client_for(lambda r: httpx.Response(404, json={"gone": True})) as client:
        got = await send(client, "GET", "/x", vendor="acme", ok=(200, 404))
    assert got.status_code == 404
    assert got.json() == {"gone": True}


async def test_send_raises_for_default_non_ok_and_returns_default_ok() -> None:
    """Given a 202 then a 409
    When send() is called with the default ok set
    Then the 202 is returned and the 409 raises RejectedError."""
    statuses = iter([202, 409])
    async with client_for(lambda r: httpx.Response(next(statuses))) as client:
        assert (await send(client, "POST", "/x", vendor="acme")).status_code == 202
        with pytest.raises(RejectedError) as exc:
            await send(client, "POST", "/x", vendor="acme")
    assert exc.value.status_code == 409


async def test_send_uses_describe_for_message_and_vendor_code() -> None:
    """Given a 400 with the vendor's error envelope and a describe() that reads it
    When send() is called with a secret in its headers
    Then the error carries the vendor's words and code, and not the secret."""

    def describe(r: httpx.Response) -> tuple[str | None, str | None]:
        body = r.json()
        return body["errorSummary"], body["errorCode"]

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(400, json={"errorCode": "E0000001", "errorSummary": "Bad login"})

    async with client_for(handler) as client:
        with pytest.raises(RejectedError) as exc:
            await send(
                client,
                "POST",
                "/api/v1/users",
                vendor="okta",
                describe=describe,
                headers={"Authorization": f"SSWS {SECRET}"},
            )
    assert seen == [f"SSWS {SECRET}"]
    error = exc.value
    assert (error.vendor, error.status_code, error.vendor_code) == ("okta", 400, "E0000001")
    assert str(error) == "okta HTTP 400 E0000001: Bad login"
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


async def test_send_survives_describe_raising_value_error() -> None:
    """Given a 502 whose body is a proxy's HTML page, so describe() fails to parse JSON
    When send() is called
    Then VendorUnavailable is raised with the default message and no vendor_code."""

    def describe(r: httpx.Response) -> tuple[str | None, str | None]:
        r.json()  # raises ValueError (JSONDecodeError) on HTML
        return "never", "never"

    html = "<html><body>Bad Gateway</body></html>"
    async with client_for(lambda r: httpx.Response(502, text=html)) as client:
        with pytest.raises(VendorUnavailable) as exc:
            await send(client, "GET", "/api/things", vendor="acme", describe=describe)
    assert exc.value.status_code == 502
    assert exc.value.vendor_code is None
    assert str(exc.value) == "acme HTTP 502: GET /api/things failed"


async def test_send_passes_rate_limit_parser_through() -> None:
    """Given a 429 with the vendor's epoch header
    When send() is called with that vendor's parser
    Then RateLimited.retry_after comes from it."""
    reset = str(int(time.time()) + 20)
    async with client_for(
        lambda r: httpx.Response(429, headers={"X-Ratelimit-Retryafter": reset})
    ) as client:
        with pytest.raises(RateLimited) as exc:
            await send(
                client,
                "GET",
                "/x",
                vendor="crowdstrike",
                retry_after=epoch_header("X-Ratelimit-Retryafter"),
            )
    assert exc.value.retry_after is not None
    assert 18 <= exc.value.retry_after <= 21


async def test_send_passes_request_kwargs() -> None:
    """Given params and json for the request
    When send() is called
    Then the request on the wire carries them."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async with client_for(handler) as client:
        await send(client, "PUT", "/x", vendor="acme", params={"a": "1"}, json={"b": 2})
    assert seen[0].method == "PUT"
    assert seen[0].url.params["a"] == "1"
    assert seen[0].content == b'{"b":2}'


# TokenCache -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fetcher:
    """A token endpoint that hands out tok-1, tok-2, ... with a fixed lifetime."""

    def __init__(self, lifetime: float = 100.0, delay: float = 0.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.delay = delay

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        n = self.calls
        if self.delay:
            await asyncio.sleep(self.delay)
        return f"tok-{n}", self.lifetime


async def test_token_cache_fetches_once_for_concurrent_callers() -> None:
    """Given an empty cache and a slow token endpoint
    When 20 callers ask for a token at once
    Then one fetch happens and every caller gets its token."""
    fetch = Fetcher(delay=0.02)
    cache = TokenCache(fetch)
    tokens = await asyncio.gather(*(cache.get() for _ in range(20)))
    assert tokens == ["tok-1"] * 20
    assert fetch.calls == 1
    assert cache.fetches == 1


async def test_token_cache_refetches_after_expiry_minus_margin() -> None:
    """Given a 100 s token and a 10 s refresh margin on an injected clock
    When time reaches just before, then exactly at, expiry minus margin
    Then the cached token is reused before and replaced at that point."""
    clock = Clock()
    fetch = Fetcher(lifetime=100.0)
    cache = TokenCache(fetch, refresh_margin=10.0, clock=clock)

    assert await cache.get() == "tok-1"
    clock.now += 89.9
    assert await cache.get() == "tok-1"
    assert fetch.calls == 1
    clock.now += 0.1  # 90 s after the fetch: 100 - 10
    assert await cache.get() == "tok-2"
    assert fetch.calls == 2
    assert cache.fetches == 2


async def test_token_cache_invalidate_forces_refetch() -> None:
    """Given a fresh cached token
    When invalidate() is called
    Then the next get() fetches a new one."""
    fetch = Fetcher(lifetime=3600.0)
    cache = TokenCache(fetch, clock=Clock())
    assert await cache.get() == "tok-1"
    assert await cache.get() == "tok-1"
    cache.invalidate()
    assert await cache.get() == "tok-2"
    assert fetch.calls == 2


# CachedBearerAuth -------------------------------------------------------------------------


async def test_bearer_auth_sets_header_from_cache() -> None:
    """Given a cache holding tok-1
    When two requests are sent
    Then both carry Authorization: Bearer tok-1 and the token is fetched once."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200)

    fetch = Fetcher(lifetime=3600.0)
    auth = CachedBearerAuth(TokenCache(fetch))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
        await client.get(f"{BASE}/a")
        await client.get(f"{BASE}/b")
    assert seen == ["Bearer tok-1", "Bearer tok-1"]
    assert fetch.calls == 1


async def test_bearer_auth_custom_scheme() -> None:
    """Given scheme "SSWS"
    When a request is sent
    Then the header uses that scheme."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200)

    auth = CachedBearerAuth(TokenCache(Fetcher()), scheme="SSWS")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
        await client.get(f"{BASE}/a")
    assert seen == ["SSWS tok-1"]


async def test_bearer_auth_refetches_once_and_retries_once_on_401() -> None:
    """Given a vendor that revoked tok-1 early and accepts only tok-2
    When a request is sent with tok-1 cached
    Then the token is refetched once, the request retried once, and the 200 returned."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        ok = request.headers["Authorization"] == "Bearer tok-2"
        return httpx.Response(200 if ok else 401)

    fetch = Fetcher(lifetime=3600.0)
    cache = TokenCache(fetch)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), auth=CachedBearerAuth(cache)
    ) as client:
        got = await client.get(f"{BASE}/a")
    assert got.status_code == 200
    assert seen == ["Bearer tok-1", "Bearer tok-2"]
    assert fetch.calls == 2


async def test_bearer_auth_does_not_loop_on_persistent_401() -> None:
    """Given a vendor that refuses every token
    When a request is sent
    Then exactly two attempts are made and the second 401 is returned."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401)

    fetch = Fetcher(lifetime=3600.0)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), auth=CachedBearerAuth(TokenCache(fetch))
    ) as client:
        got = await client.get(f"{BASE}/a")
    assert got.status_code == 401
    assert seen == ["Bearer tok-1", "Bearer tok-2"]
    assert fetch.calls == 2


async def test_bearer_auth_401_through_send_is_auth_error_without_token() -> None:
    """Given a vendor that refuses every token
    When the call goes through send()
    Then AuthError is raised, with vendor and status_code, and without the token."""
    fetch = Fetcher(lifetime=3600.0)

    async def secret_fetch() -> tuple[str, float]:
        await fetch()
        return SECRET, 3600.0

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(401)),
        base_url=BASE,
        auth=CachedBearerAuth(TokenCache(secret_fetch)),
    ) as client:
        with pytest.raises(AuthError) as exc:
            await send(client, "GET", "/secure", vendor="acme")
    assert (exc.value.vendor, exc.value.status_code) == ("acme", 401)
    assert SECRET not in str(exc.value)
    assert fetch.calls == 2


def test_bearer_auth_refuses_sync_clients() -> None:
    """Given a sync httpx client
    When a request is sent with CachedBearerAuth
    Then RuntimeError explains that adapters are async."""
    auth = CachedBearerAuth(TokenCache(Fetcher()))
    with (
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)), auth=auth) as c,
        pytest.raises(RuntimeError, match="async"),
    ):
        c.get(f"{BASE}/a")
