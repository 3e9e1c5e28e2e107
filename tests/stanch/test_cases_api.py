"""The cases API as a ticketing system uses it: `stanch serve`'s service on a real port,
real HTTP, per-tenant tokens, the OpenAPI document checked against the answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from flows.record import Ledger, Store, open_store
from stanch.cases_api import ApiToken
from stanch.serve_cli import load_api_tokens, run_service
from stanch.service import SourceAuth
from tests.flows.factories import incident

ACME_TOKEN = "acme-portal-token-0123456789abcdef"
GLOBEX_TOKEN = "globex-tickets-token-0123456789abcd"


@dataclass
class Api:
    client: httpx.AsyncClient
    store: Store

    async def call(self, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """`stanch serve`'s service on a loopback port with two tenants' tokens, over a store
    holding acme incidents 1 and 2 and globex incident 3."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}"
    tokens = load_api_tokens(
        {
            "STANCH_API_TOKENS": json.dumps(
                {
                    "acme-portal": {"tenant": "acme", "token": ACME_TOKEN},
                    "globex-tickets": {"tenant": "globex", "token": GLOBEX_TOKEN},
                }
            )
        }
    )
    async with open_store(url) as store:
        for n, tenant in ((1, "acme"), (2, "acme"), (3, "globex")):
            await store.save_incident(incident(n, tenant=tenant))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        stop = asyncio.Event()
        sources = {"s": SourceAuth(tenant="acme", bearer_token="x" * 32)}  # type: ignore[arg-type]
        served = asyncio.create_task(
            run_service(url, sources, port=port, api_tokens=tokens, stop=stop, access_log=False)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            yield Api(client, store)
        stop.set()
        await served


def check(document: dict[str, Any], schema: str, body: Any) -> None:
    """``body`` is valid against ``#/components/schemas/<schema>`` of the OpenAPI document."""
    jsonschema.Draft202012Validator(
        {**document, "$ref": f"#/components/schemas/{schema}"}
    ).validate(body)


async def test_a_token_sees_and_changes_only_its_tenants_incidents(api: Api) -> None:
    """Given tokens of acme and globex,
    When acme's token lists, reads, notes, assigns and closes acme's incident,
    Then each works and answers as the OpenAPI document says, recorded as api:acme-portal;
    and globex's token gets 404 for acme's incident on every route, and does not see it
    in its list, with nothing changed."""
    acme, foreign = incident(1).id, incident(3).id
    document = (await api.call("GET", "/openapi.json", ACME_TOKEN)).json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {"/v1/incidents", "/v1/incidents/{incident_id}"}

    listed = await api.call("GET", "/v1/incidents", ACME_TOKEN)
    assert listed.status_code == 200
    check(document, "IncidentList", listed.json())
    assert {i["incident_id"] for i in listed.json()["incidents"]} == {
        incident(1).id,
        incident(2).id,
    }

    noted = await api.call("POST", f"/v1/incidents/{acme}/notes", ACME_TOKEN, json={"text": "hi"})
    assert noted.status_code == 201, noted.text
    check(document, "CaseRecord", noted.json())
    assert noted.json()["notes"][0]["author"] == "api:acme-portal"
    assigned = await api.call(
        "POST", f"/v1/incidents/{acme}/assign", ACME_TOKEN, json={"assignee": "alice"}
    )
    assert assigned.status_code == 200 and assigned.json()["assignee"] == "alice"
    closed = await api.call(
        "POST",
        f"/v1/incidents/{acme}/close",
        ACME_TOKEN,
        json={"disposition": "true-positive", "summary": "contained"},
    )
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    shown = await api.call("GET", f"/v1/incidents/{acme}", ACME_TOKEN)
    assert shown.status_code == 200
    check(document, "CaseFile", shown.json())
    assert shown.json()["case"]["closed_by"] == "api:acme-portal"
    entries = await Ledger(api.store).head()

    for method, path, body in (
        ("GET", f"/v1/incidents/{acme}", None),
        ("POST", f"/v1/incidents/{acme}/notes", {"text": "mine now"}),
        ("POST", f"/v1/incidents/{acme}/assign", {"assignee": "mallory"}),
        ("POST", f"/v1/incidents/{acme}/reopen", {"reason": "let me in"}),
        ("POST", f"/v1/incidents/{acme}/close", {"disposition": "false-positive", "summary": "x"}),
    ):
        refused = await api.call(method, path, GLOBEX_TOKEN, json=body)
        assert refused.status_code == 404, (path, refused.text)
        check(document, "ApiError", refused.json())
    theirs = (await api.call("GET", "/v1/incidents", GLOBEX_TOKEN)).json()["incidents"]
    assert [i["incident_id"] for i in theirs] == [foreign]
    assert await Ledger(api.store).head() == entries


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("", 401), ("wrong-token-wrong-token-wrong-token", 401), (ACME_TOKEN, 200)],
)
async def test_every_route_needs_a_valid_token(api: Api, token: str | None, status: int) -> None:
    """Given the service, When called with no, an empty, or a wrong bearer token,
    Then 401 with a Bearer challenge, on the schema too; a valid token gets through."""
    for path in ("/v1/incidents", "/openapi.json"):
        response = await api.call("GET", path, token)
        assert response.status_code == status
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("change", "body", "status", "field"),
    [
        ("close", {"summary": "x"}, 422, "disposition"),
        ("close", {"disposition": "resolved", "summary": "x"}, 422, "disposition"),
        ("close", {"disposition": "duplicate", "summary": "x"}, 422, "duplicate_of"),
        (
            "close",
            {"disposition": "duplicate", "summary": "x", "duplicate_of": "INC-20261121-0003"},
            422,
            "duplicate_of",
        ),
        ("notes", {"text": ""}, 422, "text"),
        ("notes", {"text": "n" * 10_001}, 422, "text"),
        ("notes", {"text": "n" * 1_000_000}, 413, "body"),
        ("notes", {"text": "hi", "author": "ceo"}, 422, "author"),
        ("reopen", {"reason": "r"}, 409, None),
        ("assign", [], 400, "body"),
        ("frobnicate", {}, 404, None),
    ],
)
async def test_bad_input_gets_a_4xx_naming_the_field_and_changes_nothing(
    api: Api, change: str, body: Any, status: int, field: str | None
) -> None:
    """Given acme's open incident, When a change is sent with a missing or unknown
    disposition, a duplicate of another tenant's incident, an empty note, a note over the
    limit or of a megabyte, a field the API does not take, a reopen of an open case, a
    body that is not an object, or an unknown change,
    Then the answer is the 4xx that says so, naming the field, and nothing is recorded."""
    acme = incident(1).id
    if change == "close" and body.get("duplicate_of"):
        body = {**body, "duplicate_of": incident(3).id}
    response = await api.call("POST", f"/v1/incidents/{acme}/{change}", ACME_TOKEN, json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert (await Ledger(api.store).head()).seq == 0


async def test_unknown_incidents_and_bad_queries(api: Api) -> None:
    """Given the service, When an unknown incident is read or a list is filtered by an
    unknown status or a bad duration or limit, Then 404 or 422 naming the parameter."""
    assert (await api.call("GET", "/v1/incidents/INC-20990101-0001", ACME_TOKEN)).status_code == 404
    for query, field in (
        ("status=resolved", "status"),
        ("since=soon", "since"),
        ("limit=0", "limit"),
    ):
        response = await api.call("GET", f"/v1/incidents?{query}", ACME_TOKEN)
        assert (response.status_code, response.json()["field"]) == (422, field)


def test_api_tokens_are_checked_when_loaded() -> None:
    """Given token settings, When one is short, shared by two names, or badly named,
    Then loading fails naming the problem without the secret; none set means no API."""
    assert load_api_tokens({}) == {}
    for raw, problem in (
        ({"a": {"tenant": "acme", "token": "short"}}, "at least 32"),
        (
            {
                "a": {"tenant": "acme", "token": ACME_TOKEN},
                "b": {"tenant": "globex", "token": ACME_TOKEN},
            },
            "share one token",
        ),
        ({"Bad Name": {"tenant": "acme", "token": ACME_TOKEN}}, "not a token name"),
    ):
        with pytest.raises(ValueError, match=problem) as raised:
            load_api_tokens({"STANCH_API_TOKENS": json.dumps(raw)})
        assert ACME_TOKEN not in str(raised.value) and "short" not in str(raised.value)
    assert isinstance(
        load_api_tokens(
            {"STANCH_API_TOKENS": json.dumps({"p": {"tenant": "acme", "token": ACME_TOKEN}})}
        )["p"],
        ApiToken,
    )
