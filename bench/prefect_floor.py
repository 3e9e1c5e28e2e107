"""Prefect's own floor: a bare flow shaped like one incident, with no stanch code in it.

``python -m bench.prefect_floor [--runs N] [--warmup W] [--latency S]`` starts a Prefect
server (SQLite) under a temporary home, or uses the one ``PREFECT_API_URL`` names, and
times one async flow run per variant and run, the variants taken in turn so that drift
hits each alike:

* ``empty``: the flow run alone, no task;
* ``tasks``: the incident's 11 task runs (stages of 1, 2, 5, 2 and 1 tasks, each stage's
  tasks concurrent, as ``handle-incident`` runs them), untagged, named after their stage;
* ``tagged``: the same 11 task runs, each under a ``stage:``/``vendor:``/``tenant:`` tag set
  (what ``handle-incident`` did before 0.9: Prefect takes a concurrency lease per tag set);
* ``subflows``: the same 11 task runs inside one subflow per stage;
* ``batched``: the read-only calls folded into their stage's one task (9 task runs);
* ``plain``: the same 11 calls as plain coroutines, no Prefect.

Each task sleeps ``--latency`` seconds (a vendor call; 0 by default, so the figure is
Prefect's cost alone). It prints one JSON object (medians, raw times, the Prefect client's
back-off sleeps per variant) and a summary line. Ratios are to be read within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import common

STAGES = (("detect", 1), ("investigate", 2), ("contain", 5), ("remediate", 2), ("report", 1))
"""The incident's stages and how many task runs each makes (11 in all)."""
READ_ONLY = {"detect", "investigate", "report"}
"""Stages whose calls change nothing at a vendor: ``batched`` folds each into one task."""
VARIANTS = ("empty", "tasks", "tagged", "subflows", "batched", "plain")


def _variants(latency: float) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The flows to time, by variant; Prefect is imported here, after the server is set."""
    from prefect import flow, tags, task

    @task(task_run_name="{stage} · call {number}")
    async def call(stage: str, number: int) -> int:
        await asyncio.sleep(latency)
        return number

    @task(task_run_name="{stage} · {count} calls")
    async def calls(stage: str, count: int) -> int:
        await asyncio.gather(*(asyncio.sleep(latency) for _ in range(count)))
        return count

    async def stage_tasks(stage: str, count: int, *, tagged: bool) -> None:
        if not tagged:
            await asyncio.gather(*(call(stage, n) for n in range(count)))
            return
        # One tag set per (stage, vendor), as the lifecycle and executor set them.
        for number in range(count):
            with tags(f"stage:{stage}", f"vendor:v{number % 3}", "tenant:floor"):
                await call(stage, number)

    @flow(name="floor-empty")
    async def empty() -> None:
        return None

    @flow(name="floor-tasks")
    async def tasks_flow() -> None:
        for stage, count in STAGES:
            await stage_tasks(stage, count, tagged=False)

    @flow(name="floor-tagged")
    async def tagged_flow() -> None:
        for stage, count in STAGES:
            await stage_tasks(stage, count, tagged=True)

    @flow(name="floor-stage", flow_run_name="{stage}")
    async def stage_flow(stage: str, count: int) -> None:
        await stage_tasks(stage, count, tagged=False)

    @flow(name="floor-subflows")
    async def subflows() -> None:
        for stage, count in STAGES:
            await stage_flow(stage, count)

    @flow(name="floor-batched")
    async def batched() -> None:
        for stage, count in STAGES:
            if stage in READ_ONLY:
                await calls(stage, count)
            else:
                await stage_tasks(stage, count, tagged=False)

    async def plain() -> None:
        for _stage, count in STAGES:
            await asyncio.gather(*(asyncio.sleep(latency) for _ in range(count)))

    return {
        "empty": empty,
        "tasks": tasks_flow,
        "tagged": tagged_flow,
        "subflows": subflows,
        "batched": batched,
        "plain": plain,
    }


async def measure(runs: int, warmup: int, latency: float) -> dict[str, Any]:
    """Time each variant ``warmup + runs`` times, in turn; the figures."""
    variants = _variants(latency)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    backoffs: dict[str, common.Backoffs] = {name: common.Backoffs() for name in VARIANTS}
    with common.count_client_backoffs() as counter:
        for i in range(warmup + runs):
            # Rotate the order each run: no variant always follows the same one.
            order = VARIANTS[i % len(VARIANTS) :] + VARIANTS[: i % len(VARIANTS)]
            for name in order:
                before = counter.snapshot()
                started = time.perf_counter()
                await variants[name]()
                elapsed = time.perf_counter() - started
                if i >= warmup:
                    times[name].append(elapsed)
                    backoffs[name] += counter.snapshot() - before
    medians = {name: common.median(values) for name, values in times.items()}
    tasks_per_variant = {"empty": 0, "plain": 0, "batched": 9}
    per_task = {
        name: common.rounded((medians[name] - medians["empty"]) / 11 * 1000, 1)
        for name in ("tasks", "tagged", "subflows")
        if medians[name] is not None and medians["empty"] is not None
    }
    return {
        "benchmark": "prefect_floor",
        "runs": runs,
        "warmup": warmup,
        "latency_seconds": latency,
        "task_runs": {name: tasks_per_variant.get(name, 11) for name in VARIANTS},
        "seconds_median": {name: common.rounded(m) for name, m in medians.items()},
        "seconds": {name: [round(t, 3) for t in values] for name, values in times.items()},
        "ms_per_task_run_over_empty": per_task,
        "client_backoffs": {name: b.as_dict() for name, b in backoffs.items()},
    }


def run(runs: int, warmup: int, latency: float) -> dict[str, Any]:
    """Start (or reuse) the Prefect server, measure, stop it; the figures."""
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="stanch-bench-floor-") as tmp:
        home = Path(tmp) / "home"
        server = common.prefect_server_for(home)
        try:
            figures = asyncio.run(measure(runs, warmup, latency))
            from stanch.prefect_server import drain_prefect_clients

            asyncio.run(drain_prefect_clients())
        finally:
            server.stop()
    figures["prefect_api_url"] = server.api_url
    figures["prefect_server_owned"] = server.owned
    figures.update(info)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the JSON object and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.prefect_floor", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each variant")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each task sleeps")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.latency < 0:
        parser.error("need --runs >= 1, --warmup >= 0 and --latency >= 0")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    figures = run(args.runs, args.warmup, args.latency)
    medians = figures["seconds_median"]
    common.emit(
        figures,
        "OK: bare Prefect flow, median of "
        f"{figures['runs']}: "
        + ", ".join(f"{name} {medians[name]} s" for name in VARIANTS)
        + f"; {figures['cores']} cores",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
