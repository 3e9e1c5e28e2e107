"""prefect.yaml names flows that exist, and ``prefect deploy --all`` registers every one."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
POOL = "stanch-process"


def deployments() -> dict[str, dict[str, Any]]:
    """prefect.yaml's deployments by name (anchors and merge keys resolved)."""
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"]: d for d in config["deployments"]}


def flow_of(entrypoint: str) -> Any:
    """The flow object an entrypoint (``flows/x.py:name``) names."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def test_every_deployment_entrypoint_is_a_prefect_flow() -> None:
    """Given prefect.yaml, When each entrypoint is imported,
    Then it is a flow, its parameters are ones the flow takes, every alert source
    has a scheduled poller, and the sweep runs every minute, one pass at a time."""
    from integrations.capabilities import Capability
    from integrations.plugin import available_plugins

    declared = deployments()
    assert "handle-incident" in declared
    for deployment in declared.values():
        path = deployment["entrypoint"].partition(":")[0]
        assert (ROOT / path).exists(), path
        flow = flow_of(deployment["entrypoint"])
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties)
        assert deployment["work_pool"]["name"] == POOL
    sources = {p.name for p in available_plugins() if Capability.ALERTS in p.adapters}
    polled = {d["parameters"]["source"] for d in declared.values() if "poll-" in d["name"]}
    assert polled == sources
    assert all(d["schedules"] for d in declared.values() if "poll-" in d["name"])
    assert flow_of(declared["sweep"]["entrypoint"]).name == "sweep"
    assert declared["sweep"]["schedules"] == [{"interval": 60}]
    assert declared["sweep"]["concurrency_limit"] == 1


async def _prefect(*args: str, api_url: str) -> tuple[int, str]:
    """Run the Prefect CLI of this interpreter from the repository root."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prefect",
        *args,
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": api_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.prefect_server
async def test_prefect_deploy_all_registers_every_deployment(prefect_server: str) -> None:
    """Given a Prefect server and the process work pool,
    When ``prefect --no-prompt deploy --all`` runs from the repository root,
    Then every deployment of prefect.yaml exists on the server with its entrypoint,
    parameters, interval schedules, work pool, concurrency limit and tags."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.schedules import IntervalSchedule

    code, output = await _prefect(
        "work-pool", "create", POOL, "--type", "process", api_url=prefect_server
    )
    assert code == 0 or "already exists" in output, output
    code, output = await _prefect("--no-prompt", "deploy", "--all", api_url=prefect_server)
    assert code == 0, output

    async with get_client() as client:
        for name, declared in deployments().items():
            flow = flow_of(declared["entrypoint"])
            stored = await client.read_deployment_by_name(f"{flow.name}/{name}")
            assert stored.entrypoint == declared["entrypoint"]
            assert stored.parameters == declared.get("parameters", {})
            intervals = []
            for entry in stored.schedules:
                assert isinstance(entry.schedule, IntervalSchedule), entry.schedule
                assert entry.active
                intervals.append(entry.schedule.interval)
            assert intervals == [
                timedelta(seconds=s["interval"]) for s in declared.get("schedules", [])
            ]
            assert stored.work_pool_name == POOL
            # Prefect keeps a deployment's concurrency limit as a global limit of its own.
            limit = stored.global_concurrency_limit
            assert limit is not None and limit.limit == declared["concurrency_limit"]
            assert set(stored.tags) == set(declared["tags"])
            assert stored.description == declared["description"]

        # The approval-overdue deployment's trigger became an automation that runs it.
        overdue = await client.read_deployment_by_name("approval-overdue/approval-overdue")
        linked = [
            a
            for a in await client.read_automations()
            if any(getattr(x, "deployment_id", None) == overdue.id for x in a.actions)
        ]
        assert len(linked) == 1
        trigger = linked[0].trigger
        assert trigger.posture == "Proactive"  # type: ignore[union-attr]
        assert trigger.expect == {"stanch.approval.decided"}  # type: ignore[union-attr]
        assert trigger.after == {"stanch.approval.requested"}  # type: ignore[union-attr]
