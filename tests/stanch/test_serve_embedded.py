"""`stanch serve` with no ``PREFECT_API_URL``: the one-host set-up on the embedded server.

The command starts (or reuses) the embedded Prefect server exactly as ``stanch demo``
does; Prefect, imported with the store before that server's address is known, must still
talk to it rather than to an ephemeral server of its own on which nothing scheduled runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from stanch.prefect_server import _free_port
from tests.stanch.policies import UNATTENDED_POLICIES

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-embedded-bearer-0123456789"


def _sweep_runs(api_url: str) -> list[dict[str, Any]]:
    deployment = httpx.get(f"{api_url}/deployments/name/sweep/sweep-serve", timeout=10)
    if deployment.status_code != 200:
        return []
    runs = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={
            "deployments": {"id": {"any_": [deployment.json()["id"]]}},
            # The first runs due, not the last scheduled (the API's default order).
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 10,
        },
        timeout=10,
    )
    runs.raise_for_status()
    return list(runs.json())


def test_serve_without_a_prefect_url_runs_its_sweep_on_the_embedded_server(
    tmp_path: Path,
) -> None:
    """Given no PREFECT_API_URL, When `stanch serve` starts,
    Then it starts the embedded server (recorded under its home, no temporary server, no
    "cannot schedule" warning), the served sweep's scheduled run reaches Completed on it,
    and SIGTERM ends the command with 0 and stops the server it started."""
    sources = tmp_path / "sources.json"
    sources.write_text(
        json.dumps({"siem": {"tenant": "demo", "format": "ocsf", "bearer_token": TOKEN}})
    )
    home = tmp_path / "stanch"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PREFECT_API_URL", "PREFECT_HOME", "PREFECT_LOGGING_LEVEL"}
    } | {
        "STANCH_MODE": "lab",
        "STANCH_HOME": str(home),
        "STANCH_REPORTS_DIR": str(tmp_path / "reports"),
        "STANCH_POLICIES_DIR": str(UNATTENDED_POLICIES),
        "STANCH_APPROVAL_SECRET": "serve-embedded-approval-key",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    port = _free_port(18830)
    log = tmp_path / "serve.log"
    command = [
        sys.executable,
        "-m",
        "stanch",
        "serve",
        "--port",
        str(port),
        "--sources-file",
        str(sources),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def tail() -> str:
        return log.read_text(errors="replace")[-4000:]

    state = home / "prefect" / "server.json"
    try:
        deadline = time.monotonic() + 240
        api_url = None
        completed: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        while not completed:
            assert process.poll() is None, f"serve exited {process.returncode}\n{tail()}"
            seen = sorted((r["expected_start_time"], r["state_name"]) for r in runs)[:3]
            assert time.monotonic() < deadline, f"no completed sweep in 240 s: {seen}\n{tail()}"
            if api_url is None and state.exists():
                api_url = json.loads(state.read_text())["api_url"]
            if api_url is not None:
                runs = _sweep_runs(api_url)
                failed = [r for r in runs if r["state_type"] in {"FAILED", "CRASHED"}]
                assert not failed, f"{failed[0]['state']['message']}\n{tail()}"
                completed = [r for r in runs if r["state_type"] == "COMPLETED"]
            time.sleep(1)
        assert "Starting temporary server" not in tail()
        assert "Cannot schedule flows on an ephemeral server" not in tail()
        server_pid = json.loads(state.read_text())["pid"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0, tail()
        assert not state.exists(), "the embedded server it started was left running"
        for _ in range(50):
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the embedded Prefect server is still running")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if state.exists():  # killed: the server it started is still ours to stop
            os.killpg(json.loads(state.read_text())["pid"], signal.SIGKILL)
