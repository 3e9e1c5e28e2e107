"""Each benchmark at its smallest size, as a subprocess: it runs and reports sane figures.

Benchmarks are not tests and their figures never gate CI; these only check that the
commands still work end to end and print the documented JSON. Each starts its own Prefect
server (no ``PREFECT_API_URL`` is passed down) and stops it when done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds per benchmark; they take about 20-40 s on 2 cores


def _environment() -> dict[str, str]:
    # The test run's conftest points Prefect and stanch at its own server and home; the
    # benchmark makes its own under a temporary directory.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "STANCH_"))
    }


def _run(*args: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert len(lines) == 2, f"expected a JSON line and a summary line, got {lines}"
    figures: dict[str, Any] = json.loads(lines[0])
    return figures, lines[1]


def _machine_ok(figures: dict[str, Any]) -> None:
    assert isinstance(figures["cores"], int)
    assert figures["cores"] >= 1
    assert figures["memory_gb"] is None or figures["memory_gb"] > 0


def test_overhead_smallest() -> None:
    figures, summary = _run("bench.overhead", "--runs", "1", "--warmup", "0")

    assert figures["benchmark"] == "overhead"
    assert figures["ok"] is True, figures["checks"]
    assert figures["checks"] == {
        "every_run_reported": True,
        "six_actions_per_incident": True,
        "same_vendor_calls": True,
    }
    assert figures["runs"] == 1
    assert len(figures["stanch_seconds"]) == len(figures["baseline_seconds"]) == 1
    assert 0 < figures["baseline_seconds_median"] < 60
    assert 0 < figures["stanch_seconds_median"] < 240
    assert figures["ratio"] > 0
    assert figures["actions_executed_per_incident"] == [6]
    requests = figures["vendor_requests"]
    assert requests["stanch"] == requests["baseline"]
    assert requests["stanch_total"] >= 10  # the lookups and the six actions at least
    assert not any("token" in route for route in requests["stanch"])
    assert figures["prefect_server_owned"] is True
    assert figures["prefect_server_peak_rss_mb"] > 0
    assert figures["worker_peak_rss_mb"] > 0
    _machine_ok(figures)
    assert summary.startswith("OK: ") and "ratio" in summary


def test_concurrency_smallest() -> None:
    figures, summary = _run("bench.concurrency", "--incidents", "1", "--runs", "1", "--warmup", "0")

    assert figures["benchmark"] == "concurrency"
    assert figures["ok"] is True, figures["checks"]
    assert figures["incidents"] == [1]
    sqlite = figures["backends"]["sqlite"]
    assert "error" not in sqlite
    size = sqlite["sizes"]["1"]
    assert size["every_incident_started"] is True
    assert size["every_incident_reported"] is True
    assert size["every_incident_contained"] is True
    assert size["incidents_per_minute"] > 0
    assert 0 < size["time_to_contain_p50_seconds"] <= size["time_to_contain_p95_seconds"]
    assert size["time_to_contain_p95_seconds"] <= size["makespan_seconds"]
    assert size["prefect_server_peak_rss_mb"] > 0
    assert size["worker_peak_rss_mb"] > 0
    if not os.environ.get("STANCH_BENCH_POSTGRES_URL"):
        assert "skipped" in figures["backends"]["postgresql"]
    _machine_ok(figures)
    assert summary.startswith("OK: ")


def _json_line(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[0])
    return figures


def test_alert_storm_smallest() -> None:
    """Given a shuffled storm of 300 alerts forming 3 incidents, When dealt to two
    `stanch serve` replicas and a poller on one store while stand-in runs advance the
    started incidents, Then exactly 3 incidents stay open, each run starts once, and no
    alert is lost or stored twice (the figures are not judged)."""
    figures = _json_line(
        "bench.alert_storm",
        "--alerts", "300", "--incidents", "3", "--batch", "20", "--poller", "--runs",
    )  # fmt: skip
    assert figures["ok"] is True, figures["checks"]
    assert figures["replicas"] == 2 and figures["poller_pages"] > 0
    assert figures["incidents_open"] == 3
    assert figures["lost"] == 0 and figures["stored_twice"] == 0
    assert figures["alerts_stored"] == figures["unique_alerts"]
    assert 3 <= figures["runs_started"] <= figures["incidents_made"]
    assert figures["alerts_per_second"] > 0


def test_approval_roundtrip_smallest() -> None:
    """Given one approval through the fake Slack, When the click is posted,
    Then the resumed task's start is measured (the 2 s target is not judged here)."""
    figures = _json_line("bench.approval_roundtrip", "--runs", "1", "--target", "1000")
    latency = figures["click_to_task_start_seconds"]
    assert figures["runs"] == 1
    assert len(latency["all"]) == 1
    assert 0 < latency["p50"] <= latency["max"]
    assert figures["click_to_ack_ms"]["p50"] > 0


def test_prefect_floor_smallest() -> None:
    """Given one run of each bare-Prefect variant, When measured against its own server,
    Then every variant is timed, the plain coroutines cost next to nothing and the flows
    something (the figures are not judged)."""
    figures = _json_line("bench.prefect_floor", "--runs", "1", "--warmup", "0")
    medians = figures["seconds_median"]
    assert set(medians) == {"empty", "tasks", "tagged", "subflows", "batched", "plain"}
    assert all(v is not None and v >= 0 for v in medians.values())
    assert medians["plain"] < medians["tasks"]
    assert figures["task_runs"]["tasks"] == figures["task_runs"]["tagged"] == 11
    assert figures["prefect_server_owned"] is True
    _machine_ok(figures)


def test_micro_smallest() -> None:
    """Given three rounds of each small cost and a ledger of 30 entries,
    When measured old way and new way, Then each new way is the cheaper one (by orders
    of magnitude where a whole file or context is no longer rebuilt)."""
    figures = _json_line("bench.micro", "--repeat", "3", "--ledger", "30")
    assert figures["tls"]["shared_context_ms"] < figures["tls"]["per_client_context_ms"]
    assert figures["playbooks"]["cached_ms"] < figures["playbooks"]["parsed_ms"]
    assert figures["yaml"]["line_loader_ms"] < figures["yaml"]["safe_loader_ms"]
    assert figures["report"]["shared_environment_ms"] < figures["report"]["new_environment_ms"]
    assert set(figures["ledger"]) == {"30"}
    _machine_ok(figures)
