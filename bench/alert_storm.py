"""Alert storm: post N alerts forming K incidents through several intakes and measure it.

``python -m bench.alert_storm [--alerts N] [--incidents K] [--batch B] [--replicas R]
[--poller] [--runs]`` starts R ``stanch serve`` services on loopback (subprocesses, one
SQLite store in a temporary directory), and with ``--poller`` a poller process with its
own ``Intake`` on the same store, as ``poll-alerts`` has. The storm, shuffled (no alert of
an incident is sent ahead of the others), is dealt round-robin to them in HMAC-signed
batches; with ``--runs`` every started incident gets a stand-in for its handle-incident
run that moves its case to investigating and contained and re-reads its joined alerts
while the storm goes on (the store work of a run, not Prefect flow runs). It checks that
no alert was lost or stored twice and that exactly K incidents stay open (the others
merged into them), and prints one JSON object and a one-line summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

TENANT = "bench"
SOURCE = "storm"
SECRET = "bench-storm-hmac-secret-0123456789"  # noqa: S105 (loopback-only benchmark key)


# Generator ---------------------------------------------------------------------------------
def _cluster(i: int) -> dict[str, str]:
    """The entities of incident ``i``: shared by its alerts, by no other incident's."""
    return {
        "host": f"WS-{i:04d}",
        "user": f"user{i:04d}@acme.example",
        "hash": hashlib.sha256(f"storm-malware-{i}".encode()).hexdigest(),
        # 45.0.0.0/8 is ordinary global space, so every cluster gets a public address.
        "ip": str(ipaddress.ip_address("45.0.0.1") + i),
    }


def _finding(uid: str, at: datetime, severity_id: int, title: str, **extra: Any) -> dict[str, Any]:
    return {
        "class_uid": 2004,
        "category_uid": 2,
        "activity_id": 1,
        "type_uid": 200401,
        "severity_id": severity_id,
        "time": int(at.timestamp() * 1000),
        "metadata": {
            "version": "1.8.0",
            "product": {"name": "Storm EDR", "vendor_name": "Bench", "uid": "storm"},
        },
        "finding_info": {
            "uid": uid,
            "title": title,
            "attacks": [{"technique": {"uid": "T1486", "name": "Data Encrypted for Impact"}}],
        },
        **extra,
    }


def _edr_alert(
    uid: str, at: datetime, c: dict[str, str], rng: random.Random, *, full: bool
) -> dict[str, Any]:
    process: dict[str, Any] = {
        "pid": rng.randint(100, 60000),
        "name": "invoice_viewer.exe",
        "cmd_line": r"C:\Users\Public\invoice_viewer.exe --silent",
        "file": {
            "name": "invoice_viewer.exe",
            "type_id": 1,
            "hashes": [{"algorithm_id": 3, "value": c["hash"]}],
        },
    }
    evidence: dict[str, Any] = {"process": process}
    if full or rng.random() < 0.5:
        process["user"] = {"name": c["user"]}
    if full or rng.random() < 0.5:
        evidence["dst_endpoint"] = {"ip": c["ip"], "port": 443}
    return _finding(
        uid,
        at,
        rng.choice((4, 5)) if not full else 5,
        f"Ransomware behaviour on {c['host']}",
        device={"type_id": 2, "hostname": c["host"], "ip": "10.20.4.42"},
        evidences=[evidence],
    )


def _identity_alert(uid: str, at: datetime, c: dict[str, str]) -> dict[str, Any]:
    return _finding(
        uid,
        at,
        4,
        f"Sign-in from a new country for {c['user']}",
        actor={"user": {"name": c["user"]}},
        evidences=[{"src_endpoint": {"ip": c["ip"], "location": {"country": "RO"}}}],
    )


def storm(
    alerts: int = 10_000,
    incidents: int = 50,
    *,
    duplicate_ratio: float = 0.2,
    seed: int = 7,
    now: datetime | None = None,
    seeds_first: bool = False,
) -> list[dict[str, Any]]:
    """``alerts`` OCSF findings that correlate into exactly ``incidents`` incidents.

    Each incident has its own host, user, SHA-256 and public IP; its first alert (the
    seed, earliest in time) names all four, later ones a subset (EDR alerts always name
    the host, sign-in alerts the user and IP). About ``duplicate_ratio`` of the list are
    re-sends of other alerts in it. The list is shuffled; ``seeds_first`` puts the seeds
    ahead of the rest instead.
    """
    if not 1 <= incidents <= alerts:
        raise ValueError("need 1 <= incidents <= alerts")
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    start = now - timedelta(minutes=30)
    clusters = [_cluster(i) for i in range(incidents)]
    seeds = [
        _edr_alert(f"storm:{i}:0", start + timedelta(seconds=i), c, rng, full=True)
        for i, c in enumerate(clusters)
    ]
    duplicates = min(int(alerts * duplicate_ratio), alerts - incidents)
    rest: list[dict[str, Any]] = []
    for n in range(alerts - incidents - duplicates):
        i = rng.randrange(incidents)
        at = start + timedelta(seconds=incidents + rng.uniform(0, 25 * 60))
        uid = f"storm:{i}:{n + 1}"
        if rng.random() < 0.3:
            rest.append(_identity_alert(uid, at, clusters[i]))
        else:
            rest.append(_edr_alert(uid, at, clusters[i], rng, full=False))
    originals = seeds + rest
    rest.extend(json.loads(json.dumps(rng.choice(originals))) for _ in range(duplicates))
    if seeds_first:
        rng.shuffle(rest)
        return seeds + rest
    # Fully shuffled: an alert naming only a user may come before any alert linking that
    # user to the host and open an incident of its own, which the next alert naming both
    # merges into the host's.
    every = seeds + rest
    rng.shuffle(every)
    return every


# Server side -------------------------------------------------------------------------------
def _serve_child(args: argparse.Namespace) -> None:
    from stanch.serve_cli import run_service
    from stanch.service import ServiceSettings, SourceAuth

    async def serve() -> None:
        async with _Starter(args.db, Path(args.starts_file), runs=args.runs) as record_start:
            await run_service(
                args.db,
                {SOURCE: SourceAuth(tenant=TENANT, format="ocsf", hmac_secret=SECRET)},
                host="127.0.0.1",
                port=args.port,
                start_incident=record_start,
                settings=ServiceSettings(max_body_bytes=64 * 1024 * 1024),
                log_level="warning",
                access_log=False,
            )

    asyncio.run(serve())


def _poll_child(args: argparse.Namespace) -> None:
    """A poller: its own ``Intake`` on the store, one ``ingest`` per page, as poll-alerts."""
    from flows.detect import Intake
    from flows.record import open_store

    pages = json.loads(Path(args.pages_file).read_text())

    async def poll() -> None:
        async with (
            _Starter(args.db, Path(args.starts_file), runs=args.runs) as record_start,
            open_store(args.db) as store,
        ):
            intake = Intake(store, start_incident=record_start)
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # the storm starts on "go"
            for page in pages:
                await intake.ingest(TENANT, "ocsf", page)

    asyncio.run(poll())


class _Starter:
    """The start callback of a bench intake: notes the start, and with ``runs`` gives the
    incident a stand-in run (the store work of handle-incident: advance the case, re-read
    the joined alerts, advance it to contained)."""

    def __init__(self, db: str, starts: Path, *, runs: bool) -> None:
        self.db, self.starts, self.runs = db, starts, runs
        self.tasks: set[asyncio.Task[None]] = set()
        self._stack: Any = None

    async def __aenter__(self) -> Any:
        from contextlib import AsyncExitStack

        from flows.record import open_store

        self._stack = AsyncExitStack()
        self.store = await self._stack.enter_async_context(open_store(self.db))
        return self.start

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._stack.aclose()

    async def start(self, incident: Any) -> None:
        # Tiny, local and at most once per incident: a blocking append is fine here.
        with self.starts.open("a", encoding="utf-8") as handle:
            handle.write(incident.id + "\n")
        if self.runs:
            task = asyncio.create_task(self._run(incident))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, incident: Any) -> None:
        from flows.detect import joined_alerts, merged_into
        from flows.models import CaseStatus
        from flows.record import CaseBook

        cases = CaseBook(self.store)
        await cases.advance(incident.id, CaseStatus.INVESTIGATING, reason="bench run")
        await asyncio.sleep(0.2)  # investigation: vendor look-ups
        if await merged_into(self.store, incident) is None:
            await joined_alerts(self.store, incident)
            await cases.advance(incident.id, CaseStatus.CONTAINED, reason="bench run")


# Client side -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


async def _post_all(
    bases: list[str], bodies: list[bytes], *, ordered: int, concurrency: int
) -> list[dict[str, Any]]:
    """Post the bodies, body ``n`` to ``bases[n % len(bases)]``; ``concurrency`` per base."""
    from stanch.service import sign

    results: list[dict[str, Any]] = []
    limits = [asyncio.Semaphore(concurrency) for _ in bases]

    async with httpx.AsyncClient(timeout=120) as client:

        async def post(n: int, body: bytes) -> None:
            async with limits[n % len(bases)]:
                headers = {"content-type": "application/json", **sign(SECRET, body, source=SOURCE)}
                response = await client.post(
                    f"{bases[n % len(bases)]}/v1/alerts/{SOURCE}", content=body, headers=headers
                )
            if response.status_code not in (202, 207, 422):
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            results.append(response.json())

        for n, body in enumerate(bodies[:ordered]):
            await post(n, body)
        await asyncio.gather(*(post(n, body) for n, body in enumerate(bodies) if n >= ordered))
    return results


async def _stored_counts(db: str) -> dict[str, int]:
    from sqlalchemy import distinct, func, select

    from flows.record import AlertRow, CaseLinkRow, IncidentRow, open_store

    async with open_store(db) as store, store.engine.connect() as conn:

        async def one(query: Any) -> int:
            return int(await conn.scalar(query) or 0)

        return {
            "incidents": await one(select(func.count()).select_from(IncidentRow)),
            "open": await one(select(func.count()).where(IncidentRow.status != "closed")),
            "merged": await one(select(func.count()).where(CaseLinkRow.kind == "merged-into")),
            "alerts": await one(select(func.count()).select_from(AlertRow)),
            "distinct_alerts": await one(select(func.count(distinct(AlertRow.finding_uid)))),
        }


def _wait_ready(base: str, child: subprocess.Popen[bytes]) -> None:
    for _ in range(300):  # 30 s at most
        if child.poll() is not None:
            raise RuntimeError(f"the service exited with {child.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the service did not become ready in 30 s")


@contextlib.contextmanager
def _database(server: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL database on ``server`` for one run (its URL), or ``None``."""
    if server is None:
        yield None
        return
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"stanch_storm_{os.getpid()}"

    async def admin(statement: str) -> None:
        engine = create_async_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(statement))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def run(
    alerts: int,
    incidents: int,
    batch: int,
    concurrency: int,
    *,
    replicas: int = 2,
    poller: bool = False,
    runs: bool = False,
    seeds_first: bool = False,
    postgres: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark; return the figures (``ok`` says whether every check held).

    With ``postgres`` (a server URL such as ``postgresql+asyncpg://postgres@127.0.0.1:5432``)
    the store is a database made on that server for the run and dropped after it.
    """
    payloads = storm(alerts, incidents, seeds_first=seeds_first)
    unique = len({p["finding_info"]["uid"] for p in payloads})
    pages = [payloads[i : i + batch] for i in range(0, len(payloads), batch)]
    # Every (replicas + 1)-th page goes to the poller, the rest to the services.
    polled = pages[replicas :: replicas + 1] if poller else []
    posted = [p for n, p in enumerate(pages) if not (poller and n % (replicas + 1) == replicas)]
    bodies = [json.dumps(page).encode() for page in posted]
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="stanch-storm-") as tmp, _database(postgres) as pg:
        db = pg or f"sqlite+aiosqlite:///{Path(tmp) / 'stanch.db'}"
        asyncio.run(_stored_counts(db))  # create the schema once, before the racers start
        starts = Path(tmp) / "starts.txt"
        extra = ["--runs"] if runs else []
        ports = [_free_port() for _ in range(replicas)]
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        children = [
            subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "bench.alert_storm",
                    "--serve",
                    "--port",
                    str(port),
                    "--db",
                    db,
                    "--starts-file",
                    str(starts),
                    *extra,
                ],
                cwd=root,
            )
            for port in ports
        ]
        polling: subprocess.Popen[bytes] | None = None
        try:
            for base, child in zip(bases, children, strict=True):
                _wait_ready(base, child)
            pages_file = Path(tmp) / "pages.json"
            pages_file.write_text(json.dumps(polled))
            if polled:
                polling = subprocess.Popen(  # noqa: S603
                    [
                        sys.executable,
                        "-m",
                        "bench.alert_storm",
                        "--poll",
                        "--db",
                        db,
                        "--pages-file",
                        str(pages_file),
                        "--starts-file",
                        str(starts),
                        *extra,
                    ],
                    cwd=root,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                assert polling.stdout is not None
                if polling.stdout.readline().strip() != b"ready":
                    raise RuntimeError("the poller did not start")
            started = time.perf_counter()
            if polling is not None:
                assert polling.stdin is not None
                polling.stdin.write(b"go\n")
                polling.stdin.close()
            ordered = -(-incidents // batch) if seeds_first else 0
            results = asyncio.run(
                _post_all(bases, bodies, ordered=ordered, concurrency=concurrency)
            )
            if polling is not None and polling.wait(timeout=600) != 0:
                raise RuntimeError(f"the poller exited with {polling.returncode}")
            elapsed = time.perf_counter() - started
            rss = max((_peak_rss_mb(c.pid) or 0.0) for c in children)
        finally:
            for child in children:
                _stop(child)
            if polling is not None and polling.poll() is None:
                polling.kill()
        stored = asyncio.run(_stored_counts(db))
        start_calls = starts.read_text().split() if starts.exists() else []

    totals = {key: sum(r[key] for r in results) for key in ("accepted", "duplicates", "rejected")}
    posted_alerts = sum(len(p) for p in posted)
    checks = {
        "every_post_answered": totals["accepted"] + totals["duplicates"] + totals["rejected"]
        == posted_alerts,
        "no_alert_lost": stored["distinct_alerts"] == unique,
        "no_alert_stored_twice": stored["alerts"] == stored["distinct_alerts"],
        "open_incidents_equal_k": stored["open"] == incidents,
        "each_run_started_once": len(start_calls) == len(set(start_calls)),
        "runs_at_most_incidents_made": len(start_calls) <= stored["incidents"],
    }
    return {
        "alerts_posted": alerts,
        "unique_alerts": unique,
        "batch": batch,
        "replicas": replicas,
        "poller_pages": len(polled),
        "service_requests": len(bodies),
        "concurrency_per_replica": concurrency,
        "stand_in_runs": runs,
        "seeds_first": seeds_first,
        "accepted_by_services": totals["accepted"],
        "duplicates_at_services": totals["duplicates"],
        "alerts_stored": stored["alerts"],
        "lost": unique - stored["distinct_alerts"],
        "stored_twice": stored["alerts"] - stored["distinct_alerts"],
        "incidents_made": stored["incidents"],
        "incidents_open": stored["open"],
        "incidents_merged": stored["merged"],
        "incidents_expected": incidents,
        "runs_started": len(start_calls),
        "elapsed_seconds": round(elapsed, 3),
        "alerts_per_second": round(alerts / elapsed, 1),
        "server_peak_rss_mb": rss,
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "checks": checks,
        "ok": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the JSON object and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.alert_storm", description=__doc__)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--incidents", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2, help="stanch serve processes")
    parser.add_argument("--poller", action="store_true", help="a poller intake too")
    parser.add_argument("--runs", action="store_true", help="stand-in runs per started incident")
    parser.add_argument("--seeds-first", action="store_true", help="the old seeded ordering")
    parser.add_argument("--postgres", help="a PostgreSQL server URL: store there, not SQLite")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--poll", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--starts-file", help=argparse.SUPPRESS)
    parser.add_argument("--pages-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve_child(args)
        return 0
    if args.poll:
        _poll_child(args)
        return 0
    if (
        args.batch < 1
        or args.concurrency < 1
        or args.replicas < 1
        or not 1 <= args.incidents <= args.alerts
    ):
        parser.error(
            "need --batch >= 1, --concurrency >= 1, --replicas >= 1 "
            "and 1 <= --incidents <= --alerts"
        )
    figures = run(
        args.alerts,
        args.incidents,
        args.batch,
        args.concurrency,
        replicas=args.replicas,
        poller=args.poller,
        runs=args.runs,
        seeds_first=args.seeds_first,
        postgres=args.postgres,
    )
    print(json.dumps(figures))
    print(
        f"{'OK' if figures['ok'] else 'FAILED'}: {figures['alerts_posted']} alerts through "
        f"{figures['replicas']} replica(s){' and a poller' if figures['poller_pages'] else ''}"
        f" -> {figures['incidents_open']} open incidents ({figures['incidents_merged']} "
        f"merged), {figures['runs_started']} runs, {figures['lost']} lost, "
        f"{figures['stored_twice']} stored twice, {figures['alerts_per_second']:.0f} alerts/s "
        f"on {figures['cores']} cores"
    )
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
