"""prefect.yaml names flows that exist."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_entrypoint_is_a_prefect_flow() -> None:
    """Given prefect.yaml, When each entrypoint is imported,
    Then it is a flow, its parameters are ones the flow takes, and every alert source
    has a scheduled poller."""
    from integrations.capabilities import Capability
    from integrations.plugin import available_plugins

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert "handle-incident" in deployments
    for deployment in deployments.values():
        path, _, name = deployment["entrypoint"].partition(":")
        assert (ROOT / path).exists(), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties)
        assert deployment["work_pool"]["name"]
    sources = {p.name for p in available_plugins() if Capability.ALERTS in p.adapters}
    polled = {d["parameters"]["source"] for d in deployments.values() if "poll-" in d["name"]}
    assert polled == sources
    assert all(d["schedules"] for d in deployments.values() if "poll-" in d["name"])
