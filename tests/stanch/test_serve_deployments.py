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
from stanch.runners import HANDLE_INCIDENT_SERVED, parse_poll, served_deployments
from stanch.serve_cli import serve
from tests.stanch.policies import UNATTENDED_POLICIES

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-deployments-bearer-0123456789"


# What is served, checked against prefect.yaml -------------------------------------------------
def _yaml_deployments() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return {d["name"]: d for d in document["deployments"]}


def test_served_deployments_mirror_prefect_yaml_under_names_of_their_own() -> None:
    """Given the pollers of two sources, When the served deployments are listed,
    Then each is prefect.yaml's namesake (same flow, interval, parameters and concurrency)
    under a name ending in -serve, the sweep leaves Slack approvals to the service, and
    pollers start incidents through the served handle-incident."""
    from stanch.runners import _flows

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
    policies = UNATTENDED_POLICIES
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


async def test_an_incident_runs_through_the_served_deployment_and_sigterm_waits_for_it(
    served: Served,
) -> None:
    """Given `stanch serve` with its deployments, When one alert batch opens an incident
    and a SIGTERM arrives while its flow run is under way,
    Then the served deployments exist (the sweep every minute, without Slack approvals),
    the run belongs to the served handle-incident deployment and reaches Completed, and
    the process exits 0 within a few seconds of the run's end, pausing the schedules."""
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

    async def run_of_incident() -> Any:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[handle.id]))
            )
        mine = [r for r in runs if r.parameters["incident"]["id"] == incident_id]
        assert len(mine) <= 1, "one flow run per incident"
        return mine[0] if mine else None

    async def under_way() -> Any:
        run = await run_of_incident()
        if run is None or run.state is None:
            return None
        return run if run.state.is_running() or run.state.is_final() else None

    run = await _poll(under_way, "the incident's flow run to start", 60, served)
    assert run.deployment_id == handle.id
    assert run.state.is_running(), f"ended before the test could stop serve: {run.state.name}"

    # SIGTERM while the run is under way: the intake stops, the process waits for the run
    # (which the runner must not cancel), then stops the runners and exits.
    served.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(served.process.wait, 90)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not stop within 90 s of SIGTERM\n{served.tail()}")
    exited = datetime.now(UTC)
    assert code == 0, served.tail()
    run = await run_of_incident()
    assert run.state.name == "Completed", f"{run.state.message}\n{served.tail()}"
    assert run.end_time is not None and exited - run.end_time < timedelta(seconds=10)
    async with get_client() as client:
        assert (await client.read_deployment(sweep.id)).paused


async def test_a_runner_that_stops_while_needed_stops_the_intake(
    prefect_server: str, tmp_path: Path
) -> None:
    """Given the intake serving next to a runner of handle-incident,
    When that runner stops while the service still needs it,
    Then the failure is recorded and the intake shuts down rather than accept incidents
    nothing would run; the SIGTERM handler Prefect's runner installs was put back."""
    from stanch.runners import ServedDeployment, ServedRunners
    from stanch.serve_cli import run_service

    before = signal.getsignal(signal.SIGTERM)
    port = _free_port(18800)
    deployments = [ServedDeployment("handle-incident", "handle-incident-fault-test")]
    async with ServedRunners(deployments, concurrent_flows=1) as runners:
        assert signal.getsignal(signal.SIGTERM) == before
        service = asyncio.create_task(
            run_service(
                f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}",
                {},
                port=port,
                stop=runners.ended,
                log_level="warning",
                access_log=False,
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the intake did not become ready")
        assert runners.failure is None and not service.done()

        [runner] = runners.runners
        await runner.astop()  # as if the Prefect API had gone for good
        await asyncio.wait_for(service, timeout=15)

        assert runners.ended.is_set()
        assert isinstance(runners.failure, RuntimeError)


async def test_stopping_the_runners_waits_for_a_run_they_are_executing(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a handle-incident run under way in the served runner, that the drain does not
    track (as one a poller started, or one resumed after a suspension),
    When the runners stop, Then they wait for its process: the run ends Completed, not
    Cancelled or Crashed, and only then are the runners gone."""
    from prefect.client.orchestration import get_client
    from prefect.deployments.flow_runs import arun_deployment
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

    from stanch.runners import ServedDeployment, ServedRunners
    from tests.flows.factories import incident

    policies = UNATTENDED_POLICIES
    for name, value in {
        "STANCH_MODE": "lab",
        "STANCH_HOME": str(tmp_path / "stanch"),
        "STANCH_REPORTS_DIR": str(tmp_path / "reports"),
        "STANCH_POLICIES_DIR": str(policies),
        "STANCH_APPROVAL_SECRET": "serve-deployments-approval-key",
    }.items():
        monkeypatch.setenv(name, value)  # the run's process inherits this environment

    deployments = [ServedDeployment("handle-incident", "handle-incident-stop-test")]
    with temporary_settings({PREFECT_RUNNER_POLL_FREQUENCY: 1}):
        async with ServedRunners(deployments, concurrent_flows=1) as runners:
            run = await arun_deployment(
                "handle-incident/handle-incident-stop-test",
                parameters={"incident": incident(tenant="demo").model_dump(mode="json")},
                timeout=0,
            )

            async def running() -> bool:
                async with get_client() as client:
                    state = (await client.read_flow_run(run.id)).state
                assert state is not None and not state.is_final(), state
                return state.is_running()

            deadline = time.monotonic() + 60
            while not await running():
                assert time.monotonic() < deadline, "the run did not start in 60 s"
                await asyncio.sleep(0.2)
    async with get_client() as client:
        ended = await client.read_flow_run(run.id)
    assert ended.state is not None and ended.state.name == "Completed", ended.state
    assert runners.failure is None
