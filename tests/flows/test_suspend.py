"""A deployed run that waits long for approval is suspended, and a decision resumes it.

The flow is served as a deployment by a real Prefect runner in a subprocess; the vendor
simulators run in this process behind real loopback sockets (live mode), so their state
survives the run's process ending at the suspend and a new one running it to the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import UUID

import pytest
import uvicorn

from flows.approval import submit_decision
from flows.record import Ledger, Store, ledger_key, open_store
from flows.settings import StanchSettings
from integrations.plugin import load_plugin
from integrations.simkit import Simulator
from stanch.lab import lab_environment, seed_demo
from stanch.prefect_server import _free_port
from tests.flows.factories import incident as demo_incident

ROOT = Path(__file__).resolve().parents[2]
VENDORS = {"edr": "crowdstrike", "identity": "okta", "firewall": "fortigate"}
SECRET = "suspend-test-approval-key"
DEPLOYMENT = "handle-incident/suspend-test"

pytestmark = pytest.mark.usefixtures("prefect_server")


class LoopbackLab:
    """The three simulators served over loopback by uvicorn on a background thread."""

    def __init__(self) -> None:
        self.simulators: dict[str, Simulator] = {}
        self.env: dict[str, str] = {}
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LoopbackLab:
        port = 18900
        for vendor in VENDORS.values():
            simulator = load_plugin(vendor).simulator()
            seed_demo(vendor, simulator)
            port = _free_port(port + 1)
            config = uvicorn.Config(
                simulator.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
            self._servers.append(uvicorn.Server(config))
            self.simulators[vendor] = simulator
            self.env.update(lab_environment(vendor, f"http://127.0.0.1:{port}"))

        async def serve_all() -> None:
            await asyncio.gather(*(s.serve() for s in self._servers))

        self._thread = threading.Thread(target=asyncio.run, args=(serve_all(),), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not all(s.started for s in self._servers):
            assert time.monotonic() < deadline, "simulators did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def changes(self) -> Counter[tuple[str, str | None]]:
        """State-changing requests each simulator answered with success, by route."""
        return Counter(
            (vendor, r.route)
            for vendor, sim in self.simulators.items()
            for r in sim.requests
            if r.method != "GET" and "token" not in (r.route or "") and 200 <= r.status < 300
        )


@pytest.fixture
def lab() -> Iterator[LoopbackLab]:
    with LoopbackLab() as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "stanch"


@pytest.fixture
def runner(lab: LoopbackLab, home: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`handle_incident.serve()` in a subprocess: the runner that executes deployed runs."""
    env = {
        **os.environ,
        **lab.env,
        "STANCH_MODE": "live",
        # The loopback lab's settings are the provider's: this tenant opts in to them.
        "STANCH_TENANTS": '{"suspendtest": {"credentials": "provider"}}',
        "STANCH_HOME": str(home),
        "STANCH_REPORTS_DIR": str(tmp_path / "reports"),
        "STANCH_APPROVAL_SECRET": SECRET,
        "STANCH_APPROVAL_TIMEOUT_SECONDS": "7200",
        "STANCH_APPROVAL_SUSPEND_AFTER_SECONDS": "600",
        **{f"STANCH_{c.upper()}": v for c, v in VENDORS.items()},
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    log = (tmp_path / "runner.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from flows.lifecycle import handle_incident; "
            "handle_incident.serve(name='suspend-test', print_starting_message=False)",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
async def store(home: Path) -> AsyncIterator[Store]:
    settings = StanchSettings(home=home)
    async with open_store(settings.store_url) as opened:
        yield opened


def _tail(log: Path) -> str:
    """The end of the runner's log, for a failure message."""
    return log.read_text()[-3000:] if log.exists() else ""


async def _wait_for(predicate: object, what: str, within: float, log: Path) -> object:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await predicate()  # type: ignore[operator]
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; runner log:\n{_tail(log)}")


async def test_a_deployed_run_suspends_for_approval_and_resumes_in_a_new_process(
    lab: LoopbackLab, runner: subprocess.Popen[str], store: Store, tmp_path: Path
) -> None:
    """Given handle-incident served as a deployment and a tenant whose policy makes
    containment wait for an analyst for up to two hours,
    When a deployed run reaches the approval,
    Then it is suspended (its process gives the worker slot back), and the analyst's signed
    decision resumes it: a new process runs it to Completed, every containment reaches the
    vendors exactly once, and the decision is recorded once."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    log = tmp_path / "runner.log"
    incident = demo_incident(tenant="suspendtest")

    async def deployed() -> bool:
        async with get_client() as client:
            try:
                await client.read_deployment_by_name(DEPLOYMENT)
            except Exception:
                return False
            return True

    await _wait_for(deployed, "the served deployment", 60, log)
    started = await run_deployment(
        DEPLOYMENT, parameters={"incident": incident.model_dump(mode="json")}, timeout=0
    )
    run_id: UUID = started.id

    async def suspended() -> str | None:
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
        assert run.state is not None
        assert not run.state.is_final(), f"run ended {run.state.name}: {run.state.message}"
        if run.state.name != "Suspended":
            return None
        pending = await store.approvals(incident_id=incident.id, status="pending")
        return pending[0].id if pending else None

    approval_id = str(await _wait_for(suspended, "the run to suspend", 90, log))
    events = [(e.stage, e.event) for e in await store.stage_events(incident.id)]
    assert ("contain", "suspended") in events
    assert not lab.changes(), "nothing may be contained before the decision"

    await submit_decision(
        store,
        SECRET.encode(),
        approval_id,
        approve=True,
        approver="U0ANALYST",
        channel="cli",
        reason="contain it",
    )

    async def finished() -> str | None:
        async with get_client() as client:
            run = await client.read_flow_run(run_id)
        assert run.state is not None
        return run.state.name if run.state.is_final() else None

    final = await _wait_for(finished, "the resumed run to finish", 120, log)
    assert final == "Completed", _tail(log)

    # One state-changing vendor request per executed action: none sent twice by the run
    # that suspended and the run that resumed.
    executed = [a for a in await store.actions(incident.id) if a.status == "executed"]
    assert len(executed) >= 3 and len({a.idempotency_key for a in executed}) == len(executed)
    changes = lab.changes()
    assert sum(changes.values()) == len(executed), (changes, [a.action for a in executed])
    approval = await store.get_approval(approval_id)
    assert approval is not None and approval.status == "approved"
    assert approval.decided_by == "cli:U0ANALYST"
    ledger = Ledger(store, key=ledger_key(SECRET.encode()))  # the runner's approval key
    decisions = [e for e in await ledger.entries(incident.id) if e.kind == "decision"]
    assert [d.status for d in decisions] == ["approved"]
    assert (await ledger.verify()).ok
