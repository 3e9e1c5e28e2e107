"""`stanch serve` serves stanch's deployments on a one-host install, in its own event loop.

The end-to-end test starts the real command in a subprocess against the session's Prefect
server (lab mode, a policy that lets every action run unattended), posts one alert batch
and follows the incident's flow run through the served ``handle-incident`` deployment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stanch.demo import scenario_alerts
from stanch.prefect_server import _free_port
from stanch.serve_cli import (
    HANDLE_INCIDENT_SERVED,
    parse_poll,
    serve,
    served_deployments,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-deployments-bearer-0123456789"

# Every containment and remediation verb runs unattended for tenant `demo`, so the run
# completes without a human.
POLICY = """\
version: 1
tenant: demo
approvers:
  cli: true
approval:
  approvals: 1
  timeout: 15m
  on_timeout: deny
actions:
  edr.contain_host: {unattended_from: informational}
  identity.suspend_user: {unattended_from: informational}
  identity.revoke_sessions: {unattended_from: informational}
  firewall.block_ip: {unattended_from: informational}
  edr.block_hash: {unattended_from: informational}
  identity.expire_password: {unattended_from: informational}
"""


# What is served, checked against prefect.yaml -------------------------------------------------
def _yaml_deployments() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return {d["name"]: d for d in document["deployments"]}


def test_served_deployments_mirror_prefect_yaml_under_names_of_their_own() -> None:
    """Given the pollers of two sources, When the served deployments are listed,
    Then each is prefect.yaml's namesake (same flow, interval, parameters and concurrency)
    under a name ending in -serve, the sweep leaves Slack approvals to the service, and
    pollers start incidents through the served handle-incident."""
    from stanch.serve_cli import _flows

    yaml_deployments = _yaml_deployments()
    flows = _flows()
    served = served_deployments(["crowdstrike", "okta"])

    assert [d.name for d in served] == [
        "handle-incident-serve",
        "sweep-serve",
        "poll-crowdstrike-serve",
        "poll-okta-serve",
    ]
    for deployment in served:
        namesake = yaml_deployments[deployment.name.removesuffix("-serve")]
        assert deployment.name not in yaml_deployments
        assert namesake["entrypoint"].endswith(":" + flows[deployment.flow].fn.__name__)
        assert flows[deployment.flow].name == deployment.flow
        schedules = namesake.get("schedules", [])
        expected = timedelta(seconds=schedules[0]["interval"]) if schedules else None
        assert deployment.interval == expected
        assert set(deployment.tags) == set(namesake["tags"])
        extras: dict[str, dict[str, Any]] = {
            "handle-incident": {},
            "sweep": {"approvals": False},
            "poll-alerts": {"incident_deployment": HANDLE_INCIDENT_SERVED},
        }
        extra = extras[deployment.flow]
        assert deployment.parameters == {**namesake.get("parameters", {}), **extra}
        if deployment.interval is not None:
            assert deployment.concurrency_limit == namesake["concurrency_limit"] == 1
    assert HANDLE_INCIDENT_SERVED == "handle-incident/handle-incident-serve"


def test_poll_names_alert_sources_only() -> None:
    """Given --poll values, When parsed, Then names are trimmed and de-duplicated in order,
    and a vendor that is not an alert source (or unknown) is refused by name."""
    assert parse_poll("") == []
    assert parse_poll(" okta, crowdstrike,okta,") == ["okta", "crowdstrike"]
    assert set(parse_poll("crowdstrike,defender,sentinelone,okta,entra")) == {
        d["parameters"]["source"]
        for d in _yaml_deployments().values()
        if d["entrypoint"].endswith(":poll_alerts")
    }
    with pytest.raises(ValueError, match=r"fortigate, nope is not an alert source; choose from"):
        parse_poll("okta,fortigate,nope")


def test_poll_without_deployments_is_refused(tmp_path: Path) -> None:
    """Given --poll with --no-deployments, When serve starts, Then it exits 2 at once
    (nothing is polled in-process, and no Prefect server is started)."""
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({"siem": {"tenant": "demo", "bearer_token": TOKEN}}))
    assert serve(port=_free_port(18790), sources_file=sources, poll="okta", deployments=False) == 2
    assert serve(port=_free_port(18790), sources_file=sources, poll="fortigate") == 2


# End to end -----------------------------------------------------------------------------------
@dataclass
class Served:
    """The running `stanch serve` subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
def served(prefect_server: str, tmp_path: Path) -> Iterator[Served]:
    """`stanch serve` (deployments on, lab mode) on a loopback port until the test ends."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "demo.yaml").write_text(POLICY)
    sources = tmp_path / "sources.json"
    sources.write_text(
        json.dumps({"siem": {"tenant": "demo", "format": "ocsf", "bearer_token": TOKEN}})
    )
    port = _free_port(18780)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "STANCH_MODE": "lab",
        "STANCH_HOME": str(tmp_path / "stanch"),
        "STANCH_REPORTS_DIR": str(tmp_path / "reports"),
        "STANCH_POLICIES_DIR": str(policies),
        "STANCH_APPROVAL_SECRET": "serve-deployments-approval-key",
    }
    command = [
        sys.executable, "-m", "stanch", "serve", "--port", str(port),
        "--sources-file", str(sources), "--concurrent-flows", "2",
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited {process.returncode}\n{running.tail()}"
            try:
                if httpx.get(f"{running.base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve not ready in 60 s\n{running.tail()}"
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def _poll(check: Any, what: str, within: float, served: Served) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{served.tail()}")


async def test_an_incident_runs_through_the_served_deployment_and_sigterm_stops_cleanly(
    served: Served,
) -> None:
    """Given `stanch serve` with its deployments, When one alert batch opens an incident,
    Then the served deployments exist (the sweep every minute, without Slack approvals),
    the incident's flow run belongs to the served handle-incident deployment and reaches
    Completed, and a SIGTERM stops the process with exit 0 within a few seconds, pausing
    the deployments' schedules."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        handle = await client.read_deployment_by_name(HANDLE_INCIDENT_SERVED)
        sweep = await client.read_deployment_by_name("sweep/sweep-serve")
    assert handle.work_pool_name is None and not handle.paused
    assert sweep.parameters == {"approvals": False}
    assert [s.schedule.interval for s in sweep.schedules] == [timedelta(seconds=60)]  # type: ignore[union-attr]

    alerts = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as http:
        response = await http.post(
            "/v1/alerts/siem",
            json=[a.model_dump(mode="json", exclude_none=True) for a in alerts],
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 202, response.text
    assert response.json()["new_incidents"] == 1
    [incident_id] = response.json()["started"]

    async def finished() -> Any:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[handle.id]))
            )
        mine = [r for r in runs if r.parameters["incident"]["id"] == incident_id]
        assert len(mine) <= 1, "one flow run per incident"
        if mine and mine[0].state is not None and mine[0].state.is_final():
            return mine[0]
        return None

    run = await _poll(finished, "the incident's flow run to finish", 60, served)
    assert run.deployment_id == handle.id
    assert run.state.name == "Completed", f"{run.state.message}\n{served.tail()}"

    stopped_at = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(served.process.wait, 15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not stop within 15 s of SIGTERM\n{served.tail()}")
    assert code == 0, served.tail()
    assert time.monotonic() - stopped_at < 10
    async with get_client() as client:
        assert (await client.read_deployment(sweep.id)).paused
