"""Malformed alerts of every format, mixed into valid batches, through `stanch serve`'s
intake over real HTTP: no 5xx, every rejection named and kept, every valid alert stored."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import TypeAdapter
from sqlalchemy import func, select

from bench.intake_fuzz import TOKEN, Batch, batches, malformed_item, post_all, sources_config
from bench.intake_fuzz import Templates as FuzzTemplates
from flows.record import AlertRow, DeadLetterRow, open_store
from stanch.runners import log_incident
from stanch.serve_cli import run_service
from stanch.service import SourceAuth


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Serving:
    base_url: str
    db: str


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[Serving]:
    """The intake of `stanch serve` (run_service under uvicorn) on a loopback port."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}"
    sources = TypeAdapter(dict[str, SourceAuth]).validate_python(sources_config())
    port = _free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_service(
            db,
            sources,
            port=port,
            start_incident=log_incident,
            stop=stop,
            log_level="warning",
            access_log=False,
        )
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(200):
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the intake did not become ready")
    try:
        yield Serving(base, db)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def _counts(db: str) -> tuple[int, int, list[str]]:
    async with open_store(db) as store, store.engine.connect() as conn:
        alerts = await conn.scalar(select(func.count()).select_from(AlertRow))
        dead = (await conn.execute(select(DeadLetterRow.field))).scalars().all()
    return int(alerts or 0), len(dead), list(dead)


async def test_fuzzed_batches_never_get_a_5xx_and_lose_no_valid_alert(serving: Serving) -> None:
    """Given 300 malformed items of every format (huge integers, deep nesting, lone
    surrogates, NaN, wrong types, missing keys, non-objects, bad dates, bodies not UTF-8
    or not JSON) mixed into batches of valid alerts,
    When posted to the intake over HTTP,
    Then no answer is a 5xx and no connection breaks; no valid alert is rejected; every
    rejection names a field and a reason; every accepted alert is stored and every
    rejected item (and refused body) is a dead letter."""
    requests = list(batches(seed=7, malformed_total=300))
    outcome = await post_all(serving.base_url, requests)

    assert not [s for s in outcome.statuses if s >= 500], outcome.statuses
    assert outcome.resets == 0
    assert outcome.valid_rejected == 0
    assert outcome.unnamed_rejections == 0
    assert outcome.rejected > 100 and outcome.bodies_refused > 0, outcome
    alerts, dead, _fields = await _counts(serving.db)
    assert alerts == outcome.accepted and outcome.accepted >= outcome.valid
    assert dead == outcome.rejected + outcome.bodies_refused


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('{"time": 1, "x": ' + "[" * 5000 + "]" * 5000 + "}", "x", "nested deeper"),
        ('{"finding_info": {"uid": "\\ud800"}}', "finding_info.uid", "surrogate"),
        ('{"time": 100000000000000000000000000000}', "time", "64-bit"),
        ('{"severity_id": NaN}', "severity_id", "not JSON"),
        ('{"severity_id": 1e400}', "severity_id", "not finite"),
    ],
    ids=["deep", "surrogate", "huge-int", "nan", "overflowing-float"],
)
async def test_one_bad_item_is_a_422_inside_a_207_and_kept_byte_for_byte(
    serving: Serving, text: str, field: str, reason: str
) -> None:
    """Given a batch of a valid alert, one item broken in a way that used to crash the
    batch, and another valid alert, When posted, Then 207: both valid alerts stored, the
    bad one rejected naming its field and reason, dead-lettered with its bytes as sent."""
    templates = FuzzTemplates.load()
    import random

    from bench.intake_fuzz import valid_item

    rng = random.Random(3)
    good = [json.dumps(valid_item(rng, templates, "ocsf")) for _ in range(2)]
    body = f"[{good[0]},{text},{good[1]}]".encode()
    async with httpx.AsyncClient(base_url=serving.base_url) as http:
        response = await http.post(
            "/v1/alerts/fuzz-ocsf", content=body, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 207, response.text
    data = response.json()
    assert data["accepted"] == 2
    [rejected] = data["rejected_items"]
    # The path down to the container past the limit, when nesting is what broke.
    assert rejected["index"] == 1 and rejected["field"].startswith(field)
    assert reason in rejected["reason"]
    async with open_store(serving.db) as store:
        [letter] = await store.dead_letters()
    assert letter.field == rejected["field"] and letter.raw == text.encode()


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe[{}]", b'[{"a": "\xc3\x28"}]', b"[{", b""],
    ids=["bom", "utf8", "json", "empty"],
)
async def test_a_body_that_is_not_utf8_json_gets_400_and_is_kept_as_raw_bytes(
    serving: Serving, body: bytes
) -> None:
    """Given a body that is not UTF-8 or not JSON, When posted, Then 400 naming why, and
    the body is a dead letter holding exactly the bytes received."""
    async with httpx.AsyncClient(base_url=serving.base_url) as http:
        response = await http.post(
            "/v1/alerts/fuzz-defender", content=body, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 400
    assert response.json()["field"] in {"(body)", "(json)"}
    async with open_store(serving.db) as store:
        [letter] = await store.dead_letters()
    assert letter.raw == body and letter.source == "fuzz/defender"


def test_the_generator_breaks_items_in_every_way_it_names() -> None:
    """The fuzz is only as good as its generator: every mutation kind is produced."""
    import random

    rng = random.Random(1)
    templates = FuzzTemplates.load()
    kinds = {malformed_item(rng, templates, "crowdstrike")[0] for _ in range(400)}
    from bench.intake_fuzz import MUTATIONS

    assert kinds == set(MUTATIONS)
    assert any(isinstance(b, Batch) and b.whole_body_bad for b in batches(2, 300))
