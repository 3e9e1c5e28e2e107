"""The intake service: authentication, limits, mixed batches, probes and a small storm."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from bench.alert_storm import storm
from flows.detect import SOURCE_FORMATS, Intake
from flows.record import AlertRow, IncidentRow, Store, open_store
from stanch.serve_cli import load_sources
from stanch.service import ServiceSettings, SourceAuth, create_app, sign
from tests.flows.test_intake import Starts, alert

HMAC_SECRET = "hmac-secret-0123456789abcdef"
TOKEN = "bearer-token-0123456789abcdef"
SOURCES = {
    "falcon": SourceAuth(tenant="acme", format="ocsf", hmac_secret=SecretStr(HMAC_SECRET)),
    "siem": SourceAuth(tenant="globex", format="ocsf", bearer_token=SecretStr(TOKEN)),
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as opened:
        yield opened


@pytest.fixture
def starts() -> Starts:
    return Starts()


@pytest.fixture
async def client(store: Store, starts: Starts) -> AsyncIterator[httpx.AsyncClient]:
    intake = Intake(store, start_incident=starts)
    app = create_app(ServiceSettings(max_body_bytes=100_000), intake, sources=SOURCES)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stanch.test"
    ) as opened:
        yield opened


def body_of(data: Any) -> bytes:
    return json.dumps(data).encode()


async def post_signed(
    client: httpx.AsyncClient, data: Any, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = body_of(data)
    return await client.post(
        "/v1/alerts/falcon",
        content=body,
        headers=sign(HMAC_SECRET, body, source="falcon") if headers is None else headers,
    )


# Authentication -------------------------------------------------------------------------------
async def test_a_correctly_signed_alert_is_accepted(client: httpx.AsyncClient) -> None:
    """Given an alert signed with the source's secret, When posted, Then 202 with counts."""
    response = await post_signed(client, alert("H-1", host="WS-1"))
    assert response.status_code == 202
    assert response.json()["accepted"] == 1 and response.json()["new_incidents"] == 1


@pytest.mark.parametrize(
    "keep",
    [(), ("X-Stanch-Timestamp",), ("X-Stanch-Signature",)],
    ids=["no-headers", "no-signature", "no-timestamp"],
)
async def test_missing_signature_headers_get_401(
    client: httpx.AsyncClient, keep: tuple[str, ...]
) -> None:
    """Given a correctly signed alert sent without one or both signature headers,
    When posted, Then 401."""
    data = alert("H-2", host="WS-1")
    headers = {
        k: v for k, v in sign(HMAC_SECRET, body_of(data), source="falcon").items() if k in keep
    }
    response = await post_signed(client, data, headers=headers)
    assert response.status_code == 401


async def test_a_stale_but_otherwise_valid_signature_gets_401(client: httpx.AsyncClient) -> None:
    """Given a correct signature over a timestamp 301 s old, When posted, Then 401;
    the same signed 299 s ago is accepted."""
    body = body_of(alert("H-3", host="WS-1"))
    stale = sign(HMAC_SECRET, body, source="falcon", timestamp=int(time.time()) - 301)
    fresh = sign(HMAC_SECRET, body, source="falcon", timestamp=int(time.time()) - 299)
    assert (await client.post("/v1/alerts/falcon", content=body, headers=stale)).status_code == 401
    assert (await client.post("/v1/alerts/falcon", content=body, headers=fresh)).status_code == 202


@pytest.mark.parametrize("secret", ["wrong-secret-0123456789abcdef", HMAC_SECRET + "x"])
async def test_a_bad_signature_gets_401_and_stores_nothing(
    client: httpx.AsyncClient, store: Store, secret: str
) -> None:
    """Given a body signed with another secret, When posted, Then 401 and nothing stored."""
    body = body_of(alert("H-4", host="WS-1"))
    response = await client.post(
        "/v1/alerts/falcon", content=body, headers=sign(secret, body, source="falcon")
    )
    assert response.status_code == 401
    assert await store.get_incident("INC-00000000-0001") is None
    async with store.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(AlertRow)) == 0


async def test_a_signature_over_another_body_gets_401(client: httpx.AsyncClient) -> None:
    """Given headers signed over one body, When sent with a tampered body, Then 401."""
    headers = sign(HMAC_SECRET, body_of(alert("H-5", host="WS-1")), source="falcon")
    tampered = body_of(alert("H-5", host="WS-2"))
    response = await client.post("/v1/alerts/falcon", content=tampered, headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(f"Bearer {TOKEN}", 202), (f"Bearer {TOKEN}x", 401), ("", 401), (f"Basic {TOKEN}", 401)],
    ids=["good", "wrong", "missing", "not-bearer"],
)
async def test_bearer_tokens(client: httpx.AsyncClient, authorization: str, status: int) -> None:
    """Given a bearer source, When posted with the right, a wrong or no token, Then 202/401."""
    headers = {"authorization": authorization} if authorization else {}
    response = await client.post(
        "/v1/alerts/siem", content=body_of(alert("B-1", host="WS-1")), headers=headers
    )
    assert response.status_code == status


# Limits and shapes --------------------------------------------------------------------------
async def test_an_unknown_source_is_answered_like_a_failed_authentication(
    client: httpx.AsyncClient,
) -> None:
    """Given a source name not configured, When posted with or without credentials,
    Then the same 401 body as a wrong signature: nothing tells which names exist."""
    body = body_of(alert("U-1", host="WS-1"))
    wrong = await client.post(
        "/v1/alerts/falcon", content=body, headers=sign("x" * 32, body, source="falcon")
    )
    unknown = await client.post(
        "/v1/alerts/nobody", content=body, headers=sign(HMAC_SECRET, body, source="nobody")
    )
    bare = await client.post("/v1/alerts/nobody", content=body)
    assert wrong.status_code == unknown.status_code == bare.status_code == 401
    assert wrong.json() == unknown.json() == bare.json()
    assert "nobody" not in unknown.text


@pytest.mark.parametrize("stamp", ["\u00b2", "1" * 400, "-1", " 1", "", "1.5"])
async def test_a_timestamp_that_is_not_ascii_decimal_digits_gets_401(
    client: httpx.AsyncClient, stamp: str
) -> None:
    """Given a timestamp header of a superscript digit, 400 digits, a sign, a space or a
    fraction, When posted with a signature over it, Then 401, never a 500."""
    body = body_of(alert("T-1", host="WS-1"))
    headers = sign(HMAC_SECRET, body, source="falcon") | {"X-Stanch-Timestamp": stamp}
    response = await client.post(
        "/v1/alerts/falcon",
        content=body,
        headers={k: v.encode("latin-1") for k, v in headers.items()},
    )
    assert response.status_code == 401


async def test_a_request_signed_for_one_source_is_refused_by_another(
    store: Store, starts: Starts
) -> None:
    """Given two sources of one tenant sharing a secret, When a request signed for one
    is replayed to the other, Then 401 there, and 202 where it was signed for."""
    shared = SecretStr(HMAC_SECRET)
    sources = {
        "edr": SourceAuth(tenant="acme", format="ocsf", hmac_secret=shared),
        "siem": SourceAuth(tenant="acme", format="ocsf", hmac_secret=shared),
    }
    app = create_app(ServiceSettings(), Intake(store, start_incident=starts), sources=sources)
    body = body_of(alert("R-1", host="WS-1"))
    headers = sign(HMAC_SECRET, body, source="edr")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stanch.test"
    ) as http:
        assert (
            await http.post("/v1/alerts/siem", content=body, headers=headers)
        ).status_code == 401
        assert (await http.post("/v1/alerts/edr", content=body, headers=headers)).status_code == 202


@pytest.mark.parametrize("kind", ["hmac_secret", "bearer_token"])
def test_a_secret_shared_by_two_tenants_is_refused_at_start(tmp_path: Path, kind: str) -> None:
    """Given two sources of different tenants configured with one secret,
    When the sources are loaded, Then the start is refused naming both, not the secret."""
    secret = "shared-secret-0123456789abcdef"
    raw = json.dumps(
        {
            "acme-edr": {"tenant": "acme", kind: secret},
            "globex-edr": {"tenant": "globex", kind: secret},
        }
    )
    with pytest.raises(ValueError, match="share a secret") as refused:
        load_sources({"STANCH_SOURCES": raw})
    assert "acme-edr" in str(refused.value) and "globex-edr" in str(refused.value)
    assert secret not in str(refused.value)


@pytest.mark.parametrize("name", ["a.b", "Upper", "-lead", "x" * 64])
def test_a_source_name_the_signature_cannot_separate_is_refused(name: str) -> None:
    """Given a source name with a dot, upper case, a leading dash or over 63 characters,
    When loaded, Then refused naming it."""
    raw = json.dumps({name: {"tenant": "acme", "bearer_token": TOKEN}})
    with pytest.raises(ValueError, match="names are lower-case"):
        load_sources({"STANCH_SOURCES": raw})


async def test_a_body_over_the_limit_gets_413(client: httpx.AsyncClient) -> None:
    """Given a correctly signed batch over the 100,000-byte limit, When posted, Then 413;
    also when the body is streamed without a Content-Length."""
    big = [alert(f"L-{n}", host="WS-1") for n in range(400)]
    assert (await post_signed(client, big)).status_code == 413
    body = body_of(big)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post(
        "/v1/alerts/falcon", content=chunks(), headers=sign(HMAC_SECRET, body, source="falcon")
    )
    assert response.status_code == 413


async def test_malformed_json_gets_400(client: httpx.AsyncClient) -> None:
    """Given a signed body that is not JSON, When posted, Then 400."""
    response = await client.post(
        "/v1/alerts/falcon", content=b"{nope", headers=sign(HMAC_SECRET, b"{nope", source="falcon")
    )
    assert response.status_code == 400


async def test_a_mixed_batch_accepts_the_valid_and_dead_letters_the_rest(
    client: httpx.AsyncClient, store: Store
) -> None:
    """Given a batch of two valid alerts and two invalid ones, When posted,
    Then 207: two accepted, two rejected with index and field, both dead-lettered."""
    no_time = alert("M-2", host="WS-1")
    del no_time["time"]
    bad_class = alert("M-3", host="WS-1") | {"class_uid": 2005}
    response = await post_signed(
        client, [alert("M-1", host="WS-1"), no_time, bad_class, alert("M-4", host="WS-1")]
    )
    assert response.status_code == 207
    data = response.json()
    assert (data["accepted"], data["rejected"], data["new_incidents"]) == (2, 2, 1)
    assert [(r["index"], r["field"]) for r in data["rejected_items"]] == [
        (1, "time"),
        (2, "class_uid"),
    ]
    assert [d.field for d in await store.dead_letters()] == ["time", "class_uid"]


async def test_a_batch_with_nothing_valid_gets_422(client: httpx.AsyncClient) -> None:
    """Given a batch whose only item is invalid, When posted, Then 422 naming the field."""
    response = await post_signed(client, [{"class_uid": 2004}])
    assert response.status_code == 422
    assert response.json()["rejected_items"][0]["field"] == "category_uid"


async def test_a_repeated_batch_is_all_duplicates(
    client: httpx.AsyncClient, starts: Starts
) -> None:
    """Given a batch already posted, When posted again, Then 202 with only duplicates."""
    batch = [alert("R-1", host="WS-1"), alert("R-2", host="WS-1")]
    await post_signed(client, batch)
    again = (await post_signed(client, batch)).json()
    assert (again["accepted"], again["duplicates"], again["new_incidents"]) == (0, 2, 0)
    assert len(starts.incidents) == 1


# Probes -------------------------------------------------------------------------------------
async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    """Given a running service with a store, When probed, Then both probes answer 200."""
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_readiness_fails_without_a_store(tmp_path: Path, starts: Starts) -> None:
    """Given a store that cannot be opened, When /readyz is probed, Then 503 (and
    /healthz, which says only that the process runs, still 200)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}")
    app = create_app(ServiceSettings(), Intake(Store(engine), start_incident=starts), sources={})
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://stanch.test"
        ) as probe:
            assert (await probe.get("/readyz")).status_code == 503
            assert (await probe.get("/healthz")).status_code == 200
    finally:
        await engine.dispose()


# Configuration ------------------------------------------------------------------------------
def test_source_formats_match_the_normalisers() -> None:
    """Given the formats a source may name, Then they are exactly what intake normalises."""
    annotation = SourceAuth.model_fields["format"].annotation
    assert set(getattr(annotation, "__args__", ())) == SOURCE_FORMATS


@pytest.mark.parametrize(
    "fields",
    [{}, {"hmac_secret": HMAC_SECRET, "bearer_token": TOKEN}, {"bearer_token": "short"}],
    ids=["none", "both", "short"],
)
def test_a_source_needs_exactly_one_strong_secret(fields: dict[str, str]) -> None:
    """Given a source with no secret, both kinds, or a short one, Then it is refused."""
    with pytest.raises(ValidationError):
        SourceAuth.model_validate({"tenant": "acme", **fields})


def test_sources_load_from_env_or_file_without_leaking_secrets(tmp_path: Path) -> None:
    """Given sources in STANCH_SOURCES and in a file, When loaded, Then the file wins;
    an invalid configuration is refused without echoing the secret."""
    env = {"STANCH_SOURCES": json.dumps({"a": {"tenant": "acme", "bearer_token": TOKEN}})}
    assert load_sources(env)["a"].bearer_token == SecretStr(TOKEN)
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"b": {"tenant": "acme", "hmac_secret": HMAC_SECRET}}))
    assert list(load_sources(env, path)) == ["b"]
    bad = {"STANCH_SOURCES": json.dumps({"c": {"tenant": "ACME!", "bearer_token": TOKEN}})}
    with pytest.raises(ValueError, match=r"c\.tenant") as refused:
        load_sources(bad)
    assert TOKEN not in str(refused.value)
    with pytest.raises(ValueError, match="no sources"):
        load_sources({})


# A small storm ------------------------------------------------------------------------------
async def test_a_small_storm_makes_exactly_its_incidents_and_loses_nothing(
    client: httpx.AsyncClient, store: Store, starts: Starts
) -> None:
    """Given 500 alerts (a fifth of them re-sends) forming 5 incidents,
    When posted in batches of 50, Then exactly 5 incidents exist, 5 start calls were
    made, and accepted + duplicates + rejected == 500 with every accepted alert stored."""
    alerts = storm(500, 5)
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
    for start in range(0, len(alerts), 50):
        response = await client.post(
            "/v1/alerts/siem",
            content=body_of(alerts[start : start + 50]),
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 202, response.text
        for key in totals:
            totals[key] += response.json()[key]
    assert sum(totals.values()) == 500 and totals["duplicates"] == 100
    async with store.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(IncidentRow)) == 5
        assert await conn.scalar(select(func.count()).select_from(AlertRow)) == totals["accepted"]
    assert len(starts.incidents) == 5 == len(set(starts.ids))
