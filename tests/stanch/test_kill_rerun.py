"""Idempotency under a crash: SIGKILL `stanch run` mid-containment, `stanch rerun`, count.

The vendor simulators are served on loopback in this process, so the killed run and the
rerun (two separate processes) act on the same vendor state, as they would on a real
tenant; every request that reaches a simulator is tapped with its body and its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from flows.record import Ledger, ledger_key, open_store
from integrations.crowdstrike.sim import CrowdStrikeSimulator
from integrations.fortigate.sim import FortiGateSimulator
from integrations.okta.sim import OktaSimulator
from integrations.simkit import Simulator
from stanch.demo import C2_IP, HOSTNAME, RANSOMWARE_SHA256, SIGNIN_IP, USER, scenario_alerts
from stanch.lab import lab_environment
from tests.stanch.policies import UNATTENDED_POLICIES

REPO = Path(__file__).resolve().parents[2]
HANG_SECONDS = 40.0


@dataclass
class Exchange:
    """One request a simulator received; ``status`` stays ``None`` if it was never answered."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Tap:
    """ASGI middleware in front of a simulator: each request, its body and its answer."""

    app: ASGIApp
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope["query_string"].decode()))
        exchange = Exchange(scope["method"], scope["path"], query)
        with self.lock:
            self.exchanges.append(exchange)

        async def tapped_receive() -> MutableMapping[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                exchange.body += message.get("body", b"")
            return message

        async def tapped_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
            await send(message)

        await self.app(scope, tapped_receive, tapped_send)

    def snapshot(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)


def effects(vendor: str, exchange: Exchange) -> list[str]:
    """The vendor state changes one request asks for, as ``"<operation> <target>"``.

    Every mutating request of the three vendors in this scenario is listed; any other
    fails the test, so a new write path cannot slip past the count.
    """
    method, path = exchange.method, exchange.path
    if method in ("GET", "HEAD") or path in ("/oauth2/token", "/oauth2/v1/token"):
        return []
    if vendor == "crowdstrike" and path == "/devices/entities/devices-actions/v2":
        return [f"{exchange.query['action_name']} {aid}" for aid in exchange.json()["ids"]]
    if vendor == "crowdstrike" and path == "/iocs/entities/indicators/v1" and method == "POST":
        return [f"ioc {i['type']}:{i['value']}" for i in exchange.json()["indicators"]]
    if vendor == "okta" and path.startswith("/api/v1/users/"):
        user, _, rest = path.removeprefix("/api/v1/users/").partition("/")
        if method == "POST" and rest.startswith("lifecycle/"):
            return [f"{rest.removeprefix('lifecycle/')} {user}"]
        if method == "DELETE" and rest == "sessions":
            return [f"revoke_sessions {user}"]
    if vendor == "fortigate" and path == "/api/v2/monitor/user/banned/add_users":
        return [f"ban {ip}" for ip in exchange.json()["ip_addresses"]]
    raise AssertionError(f"unexpected mutating request to {vendor}: {method} {path}")


@dataclass
class Lab:
    """The three simulators, served on loopback ports, with their taps and settings."""

    simulators: dict[str, Simulator]
    taps: dict[str, Tap]
    env: dict[str, str]

    def applied(self) -> Counter[str]:
        """State changes the simulators answered with 2xx, counted per operation and target."""
        counts: Counter[str] = Counter()
        for vendor, tap in self.taps.items():
            for exchange in tap.snapshot():
                if exchange.status is not None and 200 <= exchange.status < 300:
                    counts.update(effects(vendor, exchange))
        return counts


@contextlib.contextmanager
def served_lab() -> Iterator[Lab]:
    """CrowdStrike, Okta and FortiGate simulators on loopback, in a background thread."""
    simulators: dict[str, Simulator] = {
        "crowdstrike": CrowdStrikeSimulator(),
        "okta": OktaSimulator(),
        "fortigate": FortiGateSimulator(),
    }
    taps = {vendor: Tap(sim.app) for vendor, sim in simulators.items()}
    sockets: dict[str, socket.socket] = {}
    env: dict[str, str] = {}
    for vendor in simulators:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets[vendor] = sock
        env.update(lab_environment(vendor, f"http://127.0.0.1:{sock.getsockname()[1]}"))
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                taps[vendor],
                log_level="critical",
                lifespan="off",
                # The hung request outlives the killed client; do not wait it out.
                timeout_graceful_shutdown=1,
            )
        )
        for vendor in simulators
    ]

    async def serve() -> None:
        await asyncio.gather(
            *(s.serve(sockets=[sockets[v]]) for s, v in zip(servers, simulators, strict=True))
        )

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not all(s.started for s in servers):
        assert time.monotonic() < deadline, "the simulators did not start"
        time.sleep(0.05)
    try:
        yield Lab(simulators, taps, env)
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=15)
        for sock in sockets.values():
            sock.close()


def stanch(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stanch", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def live_env(tmp_path: Path, lab: Lab) -> dict[str, str]:
    """Live mode against the lab, with this test's own stanch home, policy and reports."""
    policies = UNATTENDED_POLICIES
    (tmp_path / "playbooks").mkdir()  # none: the built-in response plans containment
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCH_")}
    env.update(lab.env)
    env.update(
        {
            "STANCH_HOME": str(tmp_path / "home"),
            "STANCH_REPORTS_DIR": str(tmp_path / "reports"),
            "STANCH_POLICIES_DIR": str(policies),
            "STANCH_PLAYBOOKS_DIR": str(tmp_path / "playbooks"),
            "STANCH_MODE": "live",
            # The lab's settings are the provider's: tenant demo opts in to them.
            "STANCH_TENANTS": '{"demo": {"credentials": "provider"}}',
            "STANCH_EDR": "crowdstrike",
            "STANCH_IDENTITY": "okta",
            "STANCH_FIREWALL": "fortigate",
            # Room to observe the hung call and kill before the client gives up on it.
            "STANCH_OKTA_TIMEOUT_SECONDS": "30",
        }
    )
    return env


def action_rows(db: Path) -> list[tuple[str, str, str, str, int]]:
    """(incident, action, target, status, attempts) of every stored action."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
            return conn.execute(
                "SELECT incident_id, action, target, status, attempts FROM actions ORDER BY id"
            ).fetchall()
    except sqlite3.OperationalError:
        return []  # the run has not created the table yet


def kill_mid_containment(
    process: subprocess.Popen[str], lab: Lab, db: Path, hung_route: str
) -> list[tuple[str, str, str, str, int]]:
    """Wait until the other four containment actions are done and suspend is in flight.

    Waiting for the store (not just the vendor) to show them finished makes the kill
    land in one known place: exactly one action is claimed and unfinished.
    """
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        assert process.poll() is None, "stanch run ended before it could be killed"
        in_flight = [
            e for e in lab.taps["okta"].snapshot() if e.path == hung_route and e.status is None
        ]
        rows = action_rows(db)
        finished = [r for r in rows if r[3] == "executed"]
        if in_flight and len(finished) == 4 and len(lab.applied()) >= 1:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            return action_rows(db)
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"containment never reached the hung call; actions: {action_rows(db)}")


async def prefect_run(run_id: str) -> tuple[str, str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        run = await client.read_flow_run(UUID(run_id))
    assert run.state is not None
    return run.state.type.value, run.state.message or ""


async def runs_named(incident: str) -> list[tuple[str, str, str | None, list[str]]]:
    """Every flow run named after the incident, for a failure message."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = await client.read_flow_runs()
    return [
        (str(r.id), r.name, r.state.name if r.state else None, r.tags)
        for r in runs
        if r.name.startswith(incident)
    ]


@pytest.mark.usefixtures("prefect_server")
def test_a_run_killed_mid_containment_reruns_without_firing_any_action_twice(
    tmp_path: Path,
) -> None:
    """Given live mode against loopback simulators and a policy that contains unattended,
    When `stanch run` is SIGKILLed while one containment call (suspend the user) hangs,
    after the other four containment actions finished, and the incident is re-run,
    Then a rerun right away is refused (the dead run looks alive for a while), a forced
    rerun completes, every vendor state change was applied exactly once, the store holds
    one finished row per action, the ledger verifies with one effect per action, the
    killed run is Crashed in Prefect naming the rerun, and the report is written."""
    started = time.monotonic()
    with served_lab() as lab:
        crowdstrike = lab.simulators["crowdstrike"]
        okta = lab.simulators["okta"]
        fortigate = lab.simulators["fortigate"]
        assert isinstance(crowdstrike, CrowdStrikeSimulator)
        assert isinstance(okta, OktaSimulator)
        assert isinstance(fortigate, FortiGateSimulator)
        aid = crowdstrike.add_host(HOSTNAME)
        uid = okta.add_user(USER)
        suspend_route = f"/api/v1/users/{uid}/lifecycle/suspend"
        # Every attempt hangs (Prefect retries transient faults), so the run cannot get
        # past it before the kill; the hang is in front of the simulator's handler, so
        # a hung request never reaches Okta's state.
        okta.hang_next(4, seconds=HANG_SECONDS, path_prefix=suspend_route)

        env = live_env(tmp_path, lab)
        db = tmp_path / "home" / "stanch.db"
        alert = tmp_path / "alert.json"
        findings = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")
        alert.write_text(
            json.dumps([f.model_dump(mode="json", exclude_none=True) for f in findings])
        )
        log = (tmp_path / "run.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "stanch", "run", str(alert)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            at_kill = kill_mid_containment(process, lab, db, suspend_route)
        finally:
            log.close()
        okta.clear_faults()
        incident = at_kill[0][0]
        assert {r[1]: r[3] for r in at_kill} == {
            "edr.contain_host": "executed",
            "identity.suspend_user": "started",
            "identity.revoke_sessions": "executed",
            "firewall.block_ip": "executed",
        }
        assert okta.user_status(uid) == "ACTIVE", "the hung suspend never reached Okta"
        with sqlite3.connect(db) as conn:
            [(killed_run,)] = conn.execute(
                "SELECT flow_run_id FROM incidents WHERE id = ?", (incident,)
            ).fetchall()
        assert asyncio.run(prefect_run(killed_run))[0] == "RUNNING", "SIGKILL leaves it Running"

        # Seconds after the kill the run's last heartbeat is recent: it may be alive.
        before = sum(len(t.snapshot()) for t in lab.taps.values())
        refused = stanch("rerun", incident, env=env, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "may still be handled by a live flow run" in refused.stderr
        assert "--force" in refused.stderr
        assert sum(len(t.snapshot()) for t in lab.taps.values()) == before, "no vendor call"
        assert asyncio.run(prefect_run(killed_run))[0] == "RUNNING"

        result = stanch("rerun", incident, "--force", "--json", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout)

        # Vendor state: each change asked for once and answered once. The suspend that
        # hung at the kill was sent again by the rerun: allowed, because the hung one never
        # reached Okta's state (it is in the tap without an answer), and the rerun's adapter
        # read the user first. Everything finished before the kill was replayed from the
        # store without a vendor call.
        assert lab.applied() == Counter(
            {
                f"contain {aid}": 1,
                f"suspend {uid}": 1,
                f"revoke_sessions {uid}": 1,
                f"ban {C2_IP}": 1,
                f"ban {SIGNIN_IP}": 1,
                f"ioc sha256:{RANSOMWARE_SHA256}": 1,
            }
        )
        suspends = [e for e in lab.taps["okta"].snapshot() if e.path == suspend_route]
        assert [e.status for e in suspends] == [None, 200]
        assert crowdstrike.host_status(aid) == "contained"
        assert okta.user_status(uid) == "SUSPENDED"
        assert okta.session_count(uid) == 0
        assert set(fortigate.table()) == {C2_IP, SIGNIN_IP}

    # The store: one row per idempotency key, each finished; only the action in flight
    # at the kill was claimed twice.
    rows = action_rows(db)
    assert sorted((r[1], r[3], r[4]) for r in rows) == [
        ("edr.block_hash", "executed", 1),
        ("edr.contain_host", "executed", 1),
        ("firewall.block_ip", "executed", 1),
        ("firewall.block_ip", "executed", 1),
        ("identity.revoke_sessions", "executed", 1),
        ("identity.suspend_user", "executed", 2),
    ]

    async def ledger() -> tuple[bool, str, Counter[str]]:
        async with open_store(f"sqlite+aiosqlite:///{db}") as store:
            # The runs' own ledger key: derived from the approval key in their home.
            key = (db.parent / "approval.key").read_text().strip().encode()
            book = Ledger(store, key=ledger_key(key))
            report = await book.verify()
            entries = await book.entries(incident)
        effects = Counter(
            e.idempotency_key or "" for e in entries if e.status in ("executed", "already_done")
        )
        return report.ok, report.message, effects

    ok, message, effect_entries = asyncio.run(ledger())
    assert ok, message
    assert len(effect_entries) == 6 and set(effect_entries.values()) == {1}

    assert summary["incident_id"] == incident
    assert summary["stages"] == dict.fromkeys(
        ["detect", "investigate", "contain", "remediate", "report"], "completed"
    )
    assert [s["id"] for s in summary["superseded"]] == [killed_run], (
        summary["superseded"],
        asyncio.run(runs_named(incident)),
    )
    assert summary["superseded"][0]["forced"] is True
    assert summary["expired_approvals"] == []  # nothing was waiting on a human
    state, crash_message = asyncio.run(prefect_run(killed_run))
    assert state == "CRASHED"
    assert f"stanch rerun {incident}" in crash_message
    assert asyncio.run(prefect_run(summary["flow_run_id"]))[0] == "COMPLETED"

    report = Path(summary["report"]["markdown"])
    assert report.parent == tmp_path / "reports" and report.exists()
    text = report.read_text()
    assert all(a["plan_sha256"] in text for a in summary["actions"])
    # A bound against a hang, not a benchmark: the whole kill and rerun, with room for a
    # loaded machine (it passed a 60 s bound on a quiet one).
    assert time.monotonic() - started < 120


def test_rerun_of_an_unknown_incident_is_refused(tmp_path: Path) -> None:
    """Given a store without the incident,
    When `stanch rerun` is asked to re-run it,
    Then it exits 2 naming the incident, before touching Prefect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCH_")}
    env["STANCH_HOME"] = str(tmp_path / "home")
    # Nothing listens here: the command must fail on the store, not on the server.
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"

    result = stanch("rerun", "INC-20990101-0001", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "no incident INC-20990101-0001 in the store" in result.stderr
    assert "Traceback" not in result.stderr
