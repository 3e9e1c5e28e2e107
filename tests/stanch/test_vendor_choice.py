"""The demo incident completes whichever vendor answers each capability."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.models import ActionStatus
from flows.settings import load_settings
from flows.wiring import default_lab
from stanch.demo import run_incident, scenario_alerts


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("edr", "identity", "firewall"),
    [("defender", "entra", "panos"), ("sentinelone", "okta", "fortigate")],
)
async def test_demo_incident_completes_on_other_vendors(
    monkeypatch: pytest.MonkeyPatch, edr: str, identity: str, firewall: str
) -> None:
    """Given STANCH_EDR / STANCH_IDENTITY / STANCH_FIREWALL naming other vendors,
    When the demo incident runs with the simulated analyst,
    Then every stage completes, every action ran on the chosen vendor, and every request
    each simulator received matched one of its documented routes."""
    monkeypatch.setenv("STANCH_EDR", edr)
    monkeypatch.setenv("STANCH_IDENTITY", identity)
    monkeypatch.setenv("STANCH_FIREWALL", firewall)
    default_lab().reset()
    settings = load_settings()
    alerts = scenario_alerts(datetime.now(UTC), edr=edr, identity=identity)

    outcome, _, error = await run_incident(settings, alerts, analyst_delay=0.1)

    assert error is None and outcome is not None, error
    assert {s.state for s in outcome.stages} == {"completed"}
    done = {(a.plan.capability.value, a.vendor) for a in outcome.actions}
    assert done == {("edr", edr), ("identity", identity), ("firewall", firewall)}
    assert all(a.status == ActionStatus.EXECUTED for a in outcome.actions)
    for vendor, sim in default_lab().simulators.items():
        unrouted = [(r.method, r.path) for r in sim.requests if r.route is None]
        assert unrouted == [], vendor
