"""Concurrency: K incidents at once through the playbook; throughput, time to contain, memory.

``python -m bench.concurrency [--incidents 1,10,50] [--runs N] [--flow-limit F]`` uses the
harness of ``bench.common`` (simulators, intake service with a ``FlowStarter``, Prefect
server, all on loopback). For each K it posts K distinct incidents (two alerts each, one
request per incident, all requests in flight together) and waits for K reports. Per run:

* **makespan**: first post to the last ``reports/<incident>.json``; incidents per minute
  is K over it;
* **time to contain**: per incident, from its post to the end of its ``contain`` stage (the
  stage record in its report, the same clock as the store's ``stage_events``); p50, p95;
* **memory**: peak RSS of the Prefect server and of this process (the worker: intake,
  flow runs, simulators), sampled every 0.2 s.

Figures are medians over ``--runs``. The store and the Prefect server use SQLite; with
``STANCH_BENCH_POSTGRES_URL`` set, every size is measured again with both on PostgreSQL.
Each backend runs in its own child process (a fresh Prefect client and memory peak).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import common

POSTGRES_ENV = "STANCH_BENCH_POSTGRES_URL"


def _postgres_urls(url: str) -> tuple[str, str]:
    """(store URL, Prefect server URL) for one PostgreSQL database, both on asyncpg."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ValueError(f"{POSTGRES_ENV} must be a postgresql:// URL")
    asyncpg = f"postgresql+asyncpg://{rest}"
    return asyncpg, asyncpg


async def _one_run(
    service: common.Service, lab: common.Lab, factory: common.EntityFactory, k: int, pids: Any
) -> dict[str, Any]:
    batches: dict[str, list[dict[str, Any]]] = {}
    for _ in range(k):
        entities = factory.next()
        lab.seed(entities)
        batches[entities.host] = common.scenario_payloads(entities)
    posted_at: dict[str, float] = {}

    async def post(host: str, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        posted_at[host] = time.time()
        return await service.post(payloads)

    with common.MemorySampler(pids) as memory:
        started = time.perf_counter()
        answers = await asyncio.gather(*(post(h, p) for h, p in batches.items()))
        reports = await service.wait_reports(k, within=120 + 20 * k)
        makespan = max(r.seen_at for r in reports) - started
        await service.starter.drain()
    to_contain: list[float] = []
    contained = 0
    for report in reports:
        contain = report.stage("contain")
        if not report.hosts or report.hosts[0] not in posted_at or contain is None:
            continue
        finished = datetime.fromisoformat(contain["finished_at"]).timestamp()
        to_contain.append(finished - posted_at[report.hosts[0]])
        contained += contain.get("state") == "completed"
    return {
        "makespan": makespan,
        "per_minute": k / makespan * 60,
        "p50": common.percentile(to_contain, 50),
        "p95": common.percentile(to_contain, 95),
        "started": sum(len(a["started"]) for a in answers),
        "reported": len(reports),
        "contained": contained,
        "memory": memory.peaks,
    }


async def measure_backend(
    prepared: common.Prepared, sizes: list[int], runs: int, warmup: int, flow_limit: int
) -> dict[str, Any]:
    """Every size ``runs`` times on one backend; medians per size."""
    factory = common.EntityFactory()
    pids = {"prefect_server": prepared.server.pid, "worker": os.getpid()}
    results: dict[str, Any] = {}
    with common.count_client_backoffs() as counter:
        async with common.serve_lab() as lab:
            os.environ.update(lab.environment)
            async with common.serve_intake(prepared, flow_limit=flow_limit) as service:
                for _ in range(warmup):
                    await _one_run(service, lab, factory, 1, pids)
                for k in sizes:
                    before = counter.snapshot()
                    rows = [await _one_run(service, lab, factory, k, pids) for _ in range(runs)]
                    backoffs = counter.snapshot() - before

                    def med(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
                        return common.median([r[key] for r in rows if r[key] is not None])

                    def peak(name: str, rows: list[dict[str, Any]] = rows) -> float | None:
                        values = [r["memory"][name] for r in rows if r["memory"][name] is not None]
                        return max(values) if values else None

                    results[str(k)] = {
                        "incidents": k,
                        "runs": runs,
                        "incidents_per_minute": common.rounded(med("per_minute"), 1),
                        "makespan_seconds": common.rounded(med("makespan")),
                        "time_to_contain_p50_seconds": common.rounded(med("p50")),
                        "time_to_contain_p95_seconds": common.rounded(med("p95")),
                        "prefect_server_peak_rss_mb": peak("prefect_server"),
                        "worker_peak_rss_mb": peak("worker"),
                        "every_incident_started": all(r["started"] == k for r in rows),
                        "every_incident_reported": all(r["reported"] == k for r in rows),
                        "every_incident_contained": all(r["contained"] == k for r in rows),
                        "prefect_client_backoffs": backoffs.as_dict(),
                    }
    return results


def run_backend(
    backend: str, sizes: list[int], runs: int, warmup: int, flow_limit: int
) -> dict[str, Any]:
    """One backend in this process: set up, measure, tear down."""
    database_url = None
    if backend == "postgresql":
        store_url, prefect_url = _postgres_urls(os.environ[POSTGRES_ENV])
        database_url = store_url
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = prefect_url
    with tempfile.TemporaryDirectory(prefix="stanch-bench-concurrency-") as tmp:
        started = time.perf_counter()
        prepared = common.prepare(Path(tmp), database_url=database_url)
        setup = time.perf_counter() - started
        try:
            sizes_out = asyncio.run(measure_backend(prepared, sizes, runs, warmup, flow_limit))
        finally:
            common.stop_server(prepared)
    return {
        "backend": backend,
        "store": prepared.store_url.split(":", 1)[0],
        "prefect_server_owned": prepared.server.owned,
        "setup_seconds": round(setup, 2),
        "sizes": sizes_out,
    }


def _child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.concurrency", "--backend", backend,
        "--incidents", ",".join(map(str, args.incidents)), "--runs", str(args.runs),
        "--warmup", str(args.warmup), "--flow-limit", str(args.flow_limit),
    ]  # fmt: skip
    budget = 600 + sum(args.incidents) * 30 * (args.runs + 1)
    done = subprocess.run(  # noqa: S603 - our own module, fixed arguments
        command,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        timeout=budget,
        check=False,
    )
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"backend": backend, "error": f"child exited {done.returncode}", "sizes": {}}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(k < 1 for k in sizes):
        raise argparse.ArgumentTypeError("a comma-separated list of positive counts")
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run each backend, print the JSON object and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__)
    parser.add_argument("--incidents", type=_sizes, default=[1, 10, 50])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured 1-incident runs")
    parser.add_argument(
        "--flow-limit", type=int, default=4, help="FlowStarter limit (flow runs at a time)"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.flow_limit < 1:
        parser.error("need --runs >= 1, --warmup >= 0 and --flow-limit >= 1")
    if args.backend:
        # Child mode: one backend, one JSON line.
        result = run_backend(args.backend, args.incidents, args.runs, args.warmup, args.flow_limit)
        print(json.dumps(result), flush=True)
        return 0
    info = common.machine()
    backends: dict[str, Any] = {"sqlite": _child("sqlite", args)}
    if os.environ.get(POSTGRES_ENV):
        backends["postgresql"] = _child("postgresql", args)
    else:
        backends["postgresql"] = {"skipped": f"{POSTGRES_ENV} is not set"}
    measured = [b for b in backends.values() if "sizes" in b]
    checks = {
        "every_backend_ran": all("error" not in b for b in measured),
        "every_incident_reported": all(
            s["every_incident_started"] and s["every_incident_reported"]
            for b in measured
            for s in b["sizes"].values()
        ),
        "every_incident_contained": all(
            s["every_incident_contained"] for b in measured for s in b["sizes"].values()
        ),
    }
    figures = {
        "benchmark": "concurrency",
        "incidents": args.incidents,
        "runs": args.runs,
        "warmup": args.warmup,
        "flow_limit": args.flow_limit,
        "backends": backends,
        **info,
        "checks": checks,
        "ok": all(checks.values()),
    }
    parts = []
    for name, backend in backends.items():
        if "skipped" in backend:
            parts.append(f"{name} skipped")
            continue
        for k, s in backend.get("sizes", {}).items():
            parts.append(
                f"{name} K={k}: {s['incidents_per_minute']}/min, contain p50 "
                f"{s['time_to_contain_p50_seconds']} s p95 {s['time_to_contain_p95_seconds']} s, "
                f"server {s['prefect_server_peak_rss_mb']} MB, worker {s['worker_peak_rss_mb']} MB"
            )
    common.emit(
        figures,
        f"{'OK' if figures['ok'] else 'FAILED'}: "
        + "; ".join(parts)
        + f" ({figures['cores']} cores, {figures['memory_gb']} GB)",
    )
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
