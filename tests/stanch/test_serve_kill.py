"""`stanch serve` killed (SIGKILL) at the worst moments, then restarted on the same store.

Everything answered 202/207 was committed before the answer, so no acknowledged alert is
lost and a sender's retry stores nothing twice; every incident answered ``started`` gets
its ``handle-incident`` run exactly once, the outbox of runs carrying it over the crash.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from stanch.prefect_server import _free_port
from tests.flows.test_intake import alert
from tests.stanch.policies import UNATTENDED_POLICIES

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-kill-bearer-0123456789abcdef"
HEADERS = {"authorization": f"Bearer {TOKEN}"}


class Serve:
    """One `stanch serve` subprocess on a store that outlives it."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.args = args
        self.extra = env or {}
        self.port = _free_port(18850)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def db(self) -> Path:
        return self.tmp_path / "stanch" / "stanch.db"

    def start(self) -> None:
        sources = self.tmp_path / "sources.json"
        sources.write_text(
            json.dumps({"siem": {"tenant": "demo", "format": "ocsf", "bearer_token": TOKEN}})
        )
        env = {
            **os.environ,
            "STANCH_MODE": "lab",
            "STANCH_HOME": str(self.tmp_path / "stanch"),
            "STANCH_REPORTS_DIR": str(self.tmp_path / "reports"),
            "STANCH_POLICIES_DIR": str(UNATTENDED_POLICIES),
            "STANCH_APPROVAL_SECRET": "serve-kill-approval-key",
            **self.extra,
        }
        command = [
            sys.executable, "-m", "stanch", "serve", "--port", str(self.port),
            "--sources-file", str(sources), "--log-level", "warning", *self.args,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 90
        while True:
            assert self.process.poll() is None, f"serve exited\n{self.tail()}"
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve not ready\n{self.tail()}"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
def no_flows(tmp_path: Path) -> Iterator[Serve]:
    serve = Serve(tmp_path, "--no-run-flows")
    try:
        yield serve
    finally:
        serve.stop()


def _batch(n: int, size: int) -> list[dict[str, object]]:
    at = int(datetime.now(UTC).timestamp() * 1000)
    return [alert(f"K-{n}-{i}", at=at, host=f"WS-{n % 50}") for i in range(size)]


def test_sigkill_mid_batches_loses_no_acknowledged_alert_and_a_retry_stores_none_twice(
    no_flows: Serve,
) -> None:
    """Given a sender posting batches of 200 alerts back to back, When `stanch serve` is
    SIGKILLed while batches are in flight, restarted, and the sender retries every batch
    it got no answer for, Then every alert of an acknowledged batch is stored, every
    alert is stored once, and the retries of batches that were in fact committed come
    back as duplicates."""
    no_flows.start()
    acknowledged: list[str] = []
    unanswered: list[list[dict[str, object]]] = []

    async def send(killer_after: int) -> None:
        enough = asyncio.Event()
        async with httpx.AsyncClient(base_url=no_flows.base_url, timeout=30) as http:

            async def one(n: int) -> None:
                batch = _batch(n, 200)
                try:
                    response = await http.post("/v1/alerts/siem", json=batch, headers=HEADERS)
                except httpx.TransportError:
                    unanswered.append(batch)
                    return
                assert response.status_code == 202, response.text
                acknowledged.extend(a["finding_info"]["uid"] for a in batch)  # type: ignore[index]
                if len(acknowledged) >= killer_after * 200:
                    enough.set()

            async def kill_later() -> None:
                await enough.wait()
                await asyncio.to_thread(no_flows.kill)

            await asyncio.gather(kill_later(), *(one(n) for n in range(40)))

    asyncio.run(send(killer_after=5))
    assert unanswered, "the kill came after the last batch: nothing was in flight"
    no_flows.start()

    async def retry() -> tuple[int, int]:
        accepted = duplicates = 0
        async with httpx.AsyncClient(base_url=no_flows.base_url, timeout=30) as http:
            for batch in unanswered:
                response = await http.post("/v1/alerts/siem", json=batch, headers=HEADERS)
                assert response.status_code == 202, response.text
                accepted += response.json()["accepted"]
                duplicates += response.json()["duplicates"]
        return accepted, duplicates

    accepted, duplicates = asyncio.run(retry())
    assert accepted + duplicates == 200 * len(unanswered)
    with sqlite3.connect(no_flows.db) as conn:
        stored = [uid for (uid,) in conn.execute("SELECT finding_uid FROM alerts")]
    assert len(stored) == len(set(stored)), "an alert was stored twice"
    assert set(acknowledged) <= set(stored), "an acknowledged alert was lost"
    assert len(stored) == 200 * 40


async def _runs_per_incident(ids: list[str], since: datetime) -> dict[str, int]:
    """handle-incident runs per incident id created since ``since`` (ids restart with each
    test's store; the session's Prefect server keeps every test's runs)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterName,
    )

    counts: dict[str, int] = {}
    async with get_client() as client:
        for incident_id in ids:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["handle-incident"])),
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(like_=incident_id),
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since),
                ),
            )
            counts[incident_id] = sum(1 for r in runs if r.name.startswith(f"{incident_id} "))
    return counts


def test_incidents_acknowledged_as_started_each_run_once_across_a_sigkill(
    prefect_server: str, tmp_path: Path
) -> None:
    """Given `stanch serve --no-deployments --concurrent-flows 1`, When one batch opens
    three incidents (answered ``started``) and the process is SIGKILLed at once (the
    second and third still wait for the one slot, their runs not created), then restarted,
    Then each of the three incidents has exactly one handle-incident run, and the outbox
    holds nothing pending."""
    serve = Serve(
        tmp_path,
        "--no-deployments",
        "--concurrent-flows",
        "1",
        env={"PREFECT_API_URL": prefect_server},
    )
    try:
        serve.start()
        since = datetime.now(UTC)
        at = int(since.timestamp() * 1000)
        batch = [alert(f"S-{n}", at=at, severity=5, host=f"SRV-{n}") for n in range(3)]
        response = httpx.post(
            f"{serve.base_url}/v1/alerts/siem", json=batch, headers=HEADERS, timeout=30
        )
        assert response.status_code == 202, response.text
        started = sorted(response.json()["started"])
        assert len(started) == 3
        serve.kill()
        with sqlite3.connect(serve.db) as conn:
            pending = [i for (i,) in conn.execute(
                "SELECT incident_id FROM incident_starts WHERE started_at IS NULL"
            )]  # fmt: skip
        assert len(pending) >= 2, "the kill came too late: no start was left pending"

        serve.start()
        deadline = time.monotonic() + 120
        while True:
            with sqlite3.connect(serve.db) as conn:
                left = conn.execute(
                    "SELECT count(*) FROM incident_starts WHERE started_at IS NULL"
                ).fetchone()[0]
            counts = asyncio.run(_runs_per_incident(started, since))
            if not left and all(counts.values()):
                break
            assert time.monotonic() < deadline, f"{left} pending, runs {counts}\n{serve.tail()}"
            time.sleep(1)
        time.sleep(5)  # a second start, if there were one, would be created by now
        assert asyncio.run(_runs_per_incident(started, since)) == dict.fromkeys(started, 1)
    finally:
        serve.stop()
