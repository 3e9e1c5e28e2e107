"""Alert storm: post N alerts forming K incidents to the intake service and measure it.

``python -m bench.alert_storm [--alerts N] [--incidents K] [--batch B]`` starts the service
on loopback in a subprocess (SQLite in a temporary directory), posts the storm in
HMAC-signed batches with httpx, checks that no alert was lost and that exactly K
incidents were made, and prints one JSON object and a one-line summary.
"""

from __future__ import annotations

import argparse
import asyncio
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
) -> list[dict[str, Any]]:
    """``alerts`` OCSF findings that correlate into exactly ``incidents`` incidents.

    Each incident has its own host, user, SHA-256 and public IP; its first alert (the
    seed, earliest in time and first in the list) names all four, later ones a subset
    (EDR alerts always name the host, sign-in alerts the user and IP). About
    ``duplicate_ratio`` of the list are re-sends of other alerts in it.
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
    rng.shuffle(rest)
    # Seeds first: an alert naming only a user could otherwise arrive before any alert
    # linking that user to the host, and rightly open an incident of its own.
    return seeds + rest


# Server side -------------------------------------------------------------------------------
def _serve_child(args: argparse.Namespace) -> None:
    from stanch.serve_cli import run_service
    from stanch.service import ServiceSettings, SourceAuth

    starts = Path(args.starts_file)

    async def record_start(incident: Any) -> None:
        # Tiny, local and at most once per incident: a blocking append is fine here.
        with starts.open("a", encoding="utf-8") as handle:  # noqa: ASYNC230
            handle.write(incident.id + "\n")

    asyncio.run(
        run_service(
            args.db,
            {SOURCE: SourceAuth(tenant=TENANT, format="ocsf", hmac_secret=SECRET)},
            host="127.0.0.1",
            port=args.port,
            start_incident=record_start,
            settings=ServiceSettings(max_body_bytes=64 * 1024 * 1024),
            log_level="warning",
            access_log=False,
        )
    )


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
    base: str, bodies: list[bytes], *, ordered: int, concurrency: int
) -> list[dict[str, Any]]:
    from stanch.service import sign

    results: list[dict[str, Any]] = []
    limit = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def post(body: bytes) -> None:
            async with limit:
                headers = {"content-type": "application/json", **sign(SECRET, body, source=SOURCE)}
                response = await client.post(f"/v1/alerts/{SOURCE}", content=body, headers=headers)
            if response.status_code not in (202, 207, 422):
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
            results.append(response.json())

        for body in bodies[:ordered]:
            await post(body)
        await asyncio.gather(*(post(body) for body in bodies[ordered:]))
    return results


async def _stored_counts(db: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from flows.record import AlertRow, IncidentRow, IncidentTriageRow, open_store

    async with open_store(db) as store, store.engine.connect() as conn:
        return {
            "incidents": await conn.scalar(select(func.count()).select_from(IncidentRow)) or 0,
            "alerts": await conn.scalar(select(func.count()).select_from(AlertRow)) or 0,
            "started": await conn.scalar(
                select(func.count()).where(IncidentTriageRow.started.is_(True))
            )
            or 0,
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


def run(alerts: int, incidents: int, batch: int, concurrency: int) -> dict[str, Any]:
    """Run the benchmark; return the figures (``ok`` says whether every check held)."""
    payloads = storm(alerts, incidents)
    bodies = [json.dumps(payloads[i : i + batch]).encode() for i in range(0, len(payloads), batch)]
    with tempfile.TemporaryDirectory(prefix="stanch-storm-") as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'stanch.db'}"
        starts = Path(tmp) / "starts.txt"
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "bench.alert_storm", "--serve",
            "--port", str(port), "--db", db, "--starts-file", str(starts),
        ]  # fmt: skip
        child = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1])  # noqa: S603
        try:
            _wait_ready(base, child)
            started = time.perf_counter()
            # Sequential until every seed alert is in, then concurrent (see storm()).
            ordered = -(-incidents // batch)
            results = asyncio.run(_post_all(base, bodies, ordered=ordered, concurrency=concurrency))
            elapsed = time.perf_counter() - started
            rss = _peak_rss_mb(child.pid)
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        stored = asyncio.run(_stored_counts(db))
        start_calls = len(starts.read_text().split()) if starts.exists() else 0

    totals = {
        key: sum(r[key] for r in results)
        for key in ("accepted", "duplicates", "rejected", "new_incidents")
    }
    checks = {
        "no_alert_lost": totals["accepted"] + totals["duplicates"] + totals["rejected"] == alerts,
        "stored_equals_accepted": stored["alerts"] == totals["accepted"],
        "incidents_equal_k": stored["incidents"] == incidents == totals["new_incidents"],
        "starts_at_most_k": start_calls <= incidents,
    }
    return {
        "alerts_posted": alerts,
        "batch": batch,
        "requests": len(bodies),
        "concurrency": concurrency,
        "accepted": totals["accepted"],
        "duplicates": totals["duplicates"],
        "rejected": totals["rejected"],
        "incidents_created": stored["incidents"],
        "incidents_expected": incidents,
        "start_callbacks": start_calls,
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
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--starts-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve_child(args)
        return 0
    if args.batch < 1 or args.concurrency < 1 or not 1 <= args.incidents <= args.alerts:
        parser.error("need --batch >= 1, --concurrency >= 1 and 1 <= --incidents <= --alerts")
    figures = run(args.alerts, args.incidents, args.batch, args.concurrency)
    print(json.dumps(figures))
    print(
        f"{'OK' if figures['ok'] else 'FAILED'}: {figures['alerts_posted']} alerts "
        f"({figures['duplicates']} duplicates) -> {figures['incidents_created']} incidents, "
        f"{figures['start_callbacks']} starts, {figures['alerts_per_second']:.0f} alerts/s, "
        f"server peak RSS {figures['server_peak_rss_mb']} MB on {figures['cores']} cores"
    )
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
