"""The demo incident completes whichever vendor answers each capability."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.models import ActionStatus
from flows.settings import load_settings
from flows.wiring import default_lab
from stanch.demo import run_incident, scenario_alerts
from tests.integrations import documented
from tests.integrations.fortigate.test_documented import DOCUMENTED as FORTIGATE_OPS
from tests.integrations.panos.test_documented import DOCUMENTED as PANOS_OPS

# Each vendor's documented (method, path) operations, from tests/vendor_specs.
DOCUMENTED_OPERATIONS = {
    "crowdstrike": documented.operations(
        "crowdstrike.operations.json", "crowdstrike.all-operations.json"
    ),
    "defender": documented.operations("defender.operations.json"),
    "sentinelone": documented.operations("sentinelone.all-operations.json"),
    "okta": documented.operations("okta.all-operations.json", "okta.operations.json"),
    "entra": documented.operations("graph.operations.json"),
    "fortigate": FORTIGATE_OPS,
    "panos": PANOS_OPS,
    "virustotal": documented.operations("virustotal.operations.json"),
    "abuseipdb": documented.operations("abuseipdb.operations.json"),
}
INTEL = {"virustotal", "abuseipdb"}


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("edr", "identity", "firewall"),
    [
        ("crowdstrike", "okta", "fortigate"),
        ("defender", "entra", "panos"),
        ("sentinelone", "okta", "fortigate"),
    ],
)
async def test_demo_incident_completes_on_other_vendors(
    monkeypatch: pytest.MonkeyPatch, edr: str, identity: str, firewall: str
) -> None:
    """Given STANCH_EDR / STANCH_IDENTITY / STANCH_FIREWALL naming other vendors,
    When the demo incident runs with the simulated analyst,
    Then every stage completes, every action ran on the chosen vendor, and every request
    the adapters sent is one of that vendor's documented operations."""
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
        sent = [(r.method, r.path) for r in sim.requests]
        if vendor == "entra":  # graph.operations.json writes Graph paths without /v1.0
            sent = [(m, p.removeprefix("/v1.0")) for m, p in sent]
        if vendor in INTEL and not sent:
            continue  # answered from the intel cache an earlier run of the tenant filled
        assert sent, vendor
        assert documented.undocumented(sent, DOCUMENTED_OPERATIONS[vendor]) == [], vendor
