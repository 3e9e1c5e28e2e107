"""Overhead: one incident end to end through the playbook, against a plain-httpx baseline.

``python -m bench.overhead [--runs N] [--warmup W]`` serves the crowdstrike, okta and
fortigate simulators and the intake service on loopback (``bench.common``), then per run:

* **stanch**: seeds a fresh host and user, POSTs the demo incident's two alerts to
  ``/v1/alerts/<source>`` and waits until ``reports/<incident>.json`` is written (the
  ``handle-incident`` flow run, every action unattended by the benchmark policy);
* **baseline**: the same two alerts, normalised, then the same adapter calls through the
  same vendor adapters over the same loopback HTTP (find_host, find_user, the hunt;
  contain_host and polling get_host, suspend_user, revoke_sessions, block_ip per IP,
  concurrently; then block_hash), and a small JSON report: no Prefect, no store. The
  password expiry waits for the account's release, which an analyst confirms, so neither
  path makes it.

It prints medians of both, their ratio, and the vendor requests each path made per route
(token requests left out), which must be the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common

CONTAIN_POLL_WITHIN = 60.0


async def _call(plan: Any, adapter: Any) -> Any:
    """One planned action on its adapter; a containment is polled until the host reports it.

    The same schedule as the flow's task: first poll at once, then 0.25 s doubling to 2 s.
    """
    from integrations.capabilities import Containment

    receipt = await getattr(adapter, plan.verb)(plan.target, **plan.parameters)
    if plan.verb == "contain_host" and receipt.state != Containment.CONTAINED:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONTAIN_POLL_WITHIN
        delay = 0.25
        while loop.time() < deadline:
            host = await adapter.get_host(plan.target)
            if host.containment == Containment.CONTAINED:
                return receipt.model_copy(update={"state": Containment.CONTAINED.value})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    return receipt


async def baseline_once(payloads: list[dict[str, Any]], number: int, reports: Path) -> float:
    """The same vendor calls as the playbook, with plain adapters; seconds end to end."""
    from flows.detect import normalise
    from flows.models import Incident
    from flows.respond import assess, containment_plans, hunt_incident, remediation_plans
    from flows.settings import load_settings
    from flows.wiring import connect

    started = time.perf_counter()
    findings = [normalise("ocsf", p) for p in payloads]
    now = datetime.now(UTC)
    incident = Incident(
        id=f"INC-{now:%Y%m%d}-9{number:04d}",
        tenant=common.TENANT,
        title=(findings[0].finding_info.title or "benchmark incident")[:200],
        created_at=now,
        alerts=findings,
    )
    async with connect(load_settings(), tenant=common.TENANT) as vendors:
        hosts = await asyncio.gather(*(vendors.edr.find_host(h) for h in incident.hostnames))
        users = await asyncio.gather(*(vendors.identity.find_user(u) for u in incident.users))
        await hunt_incident(vendors.edr, incident)  # the investigate stage hunts too
        found = assess(
            incident,
            dict(zip(incident.hostnames, hosts, strict=True)),
            dict(zip(incident.users, users, strict=True)),
        )
        done: list[dict[str, Any]] = []
        for plans in (containment_plans(incident, found), remediation_plans(incident, found)):
            receipts = await asyncio.gather(
                *(_call(p, vendors.adapter(p.capability)) for p in plans)
            )
            done.extend(
                {"action": p.action, "target": p.target_label, "changed": r.changed}
                for p, r in zip(plans, receipts, strict=True)
            )
    report = {"incident": incident.id, "verdict": found.verdict, "actions": done}
    path = reports / f"{incident.id}.json"
    await asyncio.to_thread(path.write_text, json.dumps(report), encoding="utf-8")
    return time.perf_counter() - started


async def stanch_once(
    service: common.Service, payloads: list[dict[str, Any]]
) -> tuple[float, common.Report]:
    """POST the alerts; seconds until the incident's JSON report is written."""
    started = time.perf_counter()
    result = await service.post(payloads)
    if result["new_incidents"] != 1 or len(result["started"]) != 1:
        raise RuntimeError(f"expected one new started incident, the intake said {result}")
    (report,) = await service.wait_reports(1)
    elapsed = report.seen_at - started
    # Let the flow run end (artifacts, status, closing its vendor clients) before the next
    # measurement, so no request of this run is counted in the next one.
    await service.starter.drain()
    return elapsed, report


async def measure(prepared: common.Prepared, runs: int, warmup: int) -> dict[str, Any]:
    """Warm up, then alternate stanch and baseline runs; the figures."""
    factory = common.EntityFactory()
    baseline_dir = prepared.root / "baseline-reports"
    baseline_dir.mkdir()
    stanch_times: list[float] = []
    baseline_times: list[float] = []
    warm: dict[str, list[float]] = {"stanch": [], "baseline": []}
    calls: dict[str, list[Counter[str]]] = {"stanch": [], "baseline": []}
    executed: list[int] = []
    completed_flows = 0
    backoffs: list[common.Backoffs] = []
    # CPU seconds per run, of this process (intake, flow run, simulators, baseline) and
    # of the Prefect server: less at the mercy of a shared machine than wall time.
    cpu: dict[str, list[float]] = {"stanch": [], "baseline": []}
    server_cpu: dict[str, list[float]] = {"stanch": [], "baseline": []}
    server_pid = prepared.server.pid
    with common.count_client_backoffs() as counter:
        async with common.serve_lab() as lab:
            os.environ.update(lab.environment)
            async with common.serve_intake(prepared, flow_limit=1) as service:
                for i in range(warmup + runs):
                    measured = i >= warmup
                    # stanch first in even runs, baseline first in odd ones: drift hits both.
                    order = ("stanch", "baseline") if i % 2 == 0 else ("baseline", "stanch")
                    for path in order:
                        entities = factory.next()
                        lab.seed(entities)
                        payloads = common.scenario_payloads(entities)
                        marks = lab.marks()
                        cpu_before = (time.process_time(), common.cpu_seconds(server_pid))
                        if path == "stanch":
                            before = counter.snapshot()
                            elapsed, report = await stanch_once(service, payloads)
                            if measured:
                                backoffs.append(counter.snapshot() - before)
                                executed.append(report.executed())
                                completed_flows += all(
                                    (report.stage(name) or {}).get("state") == "completed"
                                    for name in ("detect", "investigate", "contain", "remediate")
                                )
                        else:
                            elapsed = await baseline_once(payloads, i, baseline_dir)
                        if measured:
                            (stanch_times if path == "stanch" else baseline_times).append(elapsed)
                            calls[path].append(lab.calls_since(marks))
                            cpu[path].append(time.process_time() - cpu_before[0])
                            server_after = common.cpu_seconds(server_pid)
                            if server_after is not None and cpu_before[1] is not None:
                                server_cpu[path].append(server_after - cpu_before[1])
                        else:
                            warm[path].append(elapsed)
    stanch_median = common.median(stanch_times)
    baseline_median = common.median(baseline_times)
    ratio = stanch_median / baseline_median if stanch_median and baseline_median else None
    per_run_equal = all(a == b for a, b in zip(calls["stanch"], calls["baseline"], strict=True))
    stanch_calls = common.counts(calls["stanch"])
    baseline_calls = common.counts(calls["baseline"])
    checks = {
        "every_run_reported": len(stanch_times) == runs == completed_flows,
        "six_actions_per_incident": all(n == 6 for n in executed),
        "same_vendor_calls": stanch_calls == baseline_calls,
    }
    return {
        "benchmark": "overhead",
        "runs": runs,
        "warmup": warmup,
        "stanch_seconds_median": common.rounded(stanch_median),
        "baseline_seconds_median": common.rounded(baseline_median),
        "ratio": common.rounded(ratio, 2),
        "stanch_seconds": [round(t, 3) for t in stanch_times],
        "baseline_seconds": [round(t, 3) for t in baseline_times],
        "warmup_seconds": {k: [round(t, 3) for t in v] for k, v in warm.items()},
        "cpu_seconds_median": {
            "stanch_process": common.rounded(common.median(cpu["stanch"])),
            "baseline_process": common.rounded(common.median(cpu["baseline"])),
            "prefect_server_during_stanch": common.rounded(common.median(server_cpu["stanch"])),
            "prefect_server_during_baseline": common.rounded(common.median(server_cpu["baseline"])),
        },
        "actions_executed_per_incident": executed,
        "prefect_client_backoffs": {
            "sleeps": sum(b.sleeps for b in backoffs),
            "seconds": round(sum(b.seconds for b in backoffs), 2),
            "per_run": [b.sleeps for b in backoffs],
        },
        "vendor_requests": {
            "stanch": stanch_calls,
            "baseline": baseline_calls,
            "stanch_total": sum(stanch_calls.values()),
            "baseline_total": sum(baseline_calls.values()),
            "equal_in_every_run": per_run_equal,
        },
        "store": prepared.store_url.split(":", 1)[0],
        "prefect_api_url": prepared.server.api_url,
        "prefect_server_owned": prepared.server.owned,
        "prefect_server_peak_rss_mb": common.peak_rss_mb(prepared.server.pid),
        "worker_peak_rss_mb": common.peak_rss_mb(os.getpid()),
        "checks": checks,
        "ok": all(checks.values()),
    }


def run(runs: int, warmup: int) -> dict[str, Any]:
    """Set up the harness in a temporary directory, measure, tear down; the figures."""
    info = common.machine()
    with tempfile.TemporaryDirectory(prefix="stanch-bench-overhead-") as tmp:
        started = time.perf_counter()
        prepared = common.prepare(Path(tmp))
        setup = time.perf_counter() - started
        try:
            figures = asyncio.run(measure(prepared, runs, warmup))
        finally:
            common.stop_server(prepared)
    figures["setup_seconds"] = round(setup, 2)
    figures.update(info)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the JSON object and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each path")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("need --runs >= 1 and --warmup >= 0")
    figures = run(args.runs, args.warmup)
    requests = figures["vendor_requests"]
    common.emit(
        figures,
        f"{'OK' if figures['ok'] else 'FAILED'}: one incident end to end, median of "
        f"{figures['runs']}: stanch {figures['stanch_seconds_median']} s, baseline "
        f"{figures['baseline_seconds_median']} s, ratio {figures['ratio']}x; vendor requests "
        f"{requests['stanch_total']} vs {requests['baseline_total']}; "
        f"{figures['cores']} cores, {figures['memory_gb']} GB",
    )
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
