"""A running incident flow learns of the alerts that joined its incident in the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from flows.detect import Intake, joined_alerts
from flows.models import ActionStatus, CaseStatus, Incident, IncidentOutcome
from flows.record import CaseBook, Store, open_store
from flows.settings import load_settings
from flows.wiring import default_lab
from stanch.demo import scenario_alerts
from tests.flows.test_lifecycle import approve, run

pytestmark = pytest.mark.usefixtures("prefect_server")

NEW_C2 = "198.51.100.99"


class Captured:
    """The intake's start callback: keeps the incidents it would have started."""

    def __init__(self) -> None:
        self.incidents: list[Incident] = []

    async def __call__(self, incident: Incident) -> None:
        self.incidents.append(incident)


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


def _alerts(tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo's ransomware alert, and a later one on the same host calling a new C2."""
    ransomware = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")[0]
    first = ransomware.model_dump(mode="json", exclude_none=True)
    first["finding_info"]["uid"] = f"joins:{tag}:1"
    later = ransomware.model_dump(mode="json", exclude_none=True)
    later["finding_info"]["uid"] = f"joins:{tag}:2"
    later["finding_info"]["title"] = "Beacon to a new command-and-control address"
    later["evidences"][0]["dst_endpoint"]["ip"] = NEW_C2
    return first, later


async def _incident_then_join(store: Store, tag: str) -> Incident:
    """Ingest the first alert (an incident starts), then the second (it joins).

    Each test has a tenant of its own: the alerts share the demo's host, user and
    indicators, which would otherwise join another test's open incident.
    """
    first, later = _alerts(tag)
    captured = Captured()
    intake = Intake(store, start_incident=captured, refresh_seconds=0)
    tenant = f"joins-{tag}"
    await intake.ingest(tenant, "ocsf", [first])
    assert len(captured.incidents) == 1
    joined = await intake.ingest(tenant, "ocsf", [later])
    assert [i.incident_id for i in joined.items] == [captured.incidents[0].id]
    assert len(captured.incidents) == 1, "a joining alert must not start a second run"
    return captured.incidents[0]


async def test_joined_alerts_are_those_the_incident_does_not_carry(store: Store) -> None:
    """Given an incident started from one alert and a second alert the intake joined to it,
    When the store is asked what joined,
    Then it names the second alert only, and nothing once the incident carries it."""
    incident = await _incident_then_join(store, "unit")
    joined = await joined_alerts(store, incident)
    assert [a.finding_info.uid for a in joined] == ["joins:unit:2"]
    carrying = incident.model_copy(update={"alerts": [*incident.alerts, *joined]})
    assert await joined_alerts(store, carrying) == []
    other_tenant = incident.model_copy(update={"tenant": "joins-other"})
    assert await joined_alerts(store, other_tenant) == []


async def test_the_running_flow_contains_what_a_joined_alert_adds(store: Store) -> None:
    """Given a flow run started for an incident of one alert, and a later alert on the same
    host naming a new C2 address that the intake joined to the incident,
    When the run reaches containment,
    Then it re-reads the incident, plans the new address too and blocks it, and the report
    carries both alerts."""
    default_lab().reset()
    incident = await _incident_then_join(store, "flow")
    assert NEW_C2 not in incident.external_ips
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    blocked = {
        a.plan.target
        for a in outcome.actions
        if a.plan.verb == "block_ip" and a.status == ActionStatus.EXECUTED
    }
    assert NEW_C2 in blocked, [
        (a.plan.verb, a.plan.target, a.status, a.error) for a in outcome.actions
    ]
    assert {a.finding_info.uid for a in outcome.incident.alerts} == {
        "joins:flow:1",
        "joins:flow:2",
    }
    contain = next(s for s in outcome.stages if s.stage.value == "contain")
    assert "1 alert(s) joined the incident" in contain.note


async def test_an_alert_after_containment_joins_and_starts_no_second_run(store: Store) -> None:
    """Given an incident whose flow ran to the end (contained, remediated, awaiting
    closure), When an alert on the same host arrives a minute later,
    Then it joins that incident and no second run is started."""
    default_lab().reset()
    first, later = _alerts("contained")
    captured = Captured()
    intake = Intake(store, start_incident=captured)
    tenant = "joins-contained"
    await intake.ingest(tenant, "ocsf", [first])
    [incident] = captured.incidents
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    status = (await CaseBook(store).get(incident.id)).status
    assert status in (CaseStatus.CONTAINED, CaseStatus.REMEDIATED, CaseStatus.AWAITING_CLOSURE)
    later["time"] = first["time"] + 60_000
    joined = await intake.ingest(tenant, "ocsf", [later])
    assert (joined.joined, joined.new_incidents) == (1, 0)
    assert joined.items[0].incident_id == incident.id
    assert joined.to_start == [] and len(captured.incidents) == 1


async def test_a_merged_incidents_run_acts_no_further_and_the_survivor_acts_for_it(
    store: Store,
) -> None:
    """Given two incidents started for one attack (one on the host, a younger one on the
    C2 address alone), and an alert naming both that merges the younger into the older,
    When both runs go on, Then the merged run skips containment and remediation and acts
    on nothing, and the survivor's run takes in the merged alerts and blocks the C2."""
    default_lab().reset()
    first, later = _alerts("merge")
    c2_only = {
        **later,
        "finding_info": {**later["finding_info"], "uid": "joins:merge:c2"},
        "device": {"hostname": "KIOSK-77"},
        "evidences": [{"dst_endpoint": {"ip": NEW_C2}}],
    }
    c2_only.pop("observables", None)
    captured = Captured()
    intake = Intake(store, start_incident=captured)
    tenant = "joins-merge"
    await intake.ingest(tenant, "ocsf", [first])
    await intake.ingest(tenant, "ocsf", [c2_only])
    older, younger = captured.incidents
    assert older.id != younger.id
    bridge = await intake.ingest(tenant, "ocsf", [later])
    assert bridge.merged == {younger.id: older.id}
    merged_outcome, _ = await run(younger, store, approve)
    assert isinstance(merged_outcome, IncidentOutcome), merged_outcome
    assert merged_outcome.actions == []
    skipped = {s.stage.value: s for s in merged_outcome.stages}
    assert skipped["contain"].state == "skipped"
    assert f"merged into {older.id}" in skipped["contain"].note
    survivor, _ = await run(older, store, approve)
    assert isinstance(survivor, IncidentOutcome), survivor
    blocked = {
        a.plan.target
        for a in survivor.actions
        if a.plan.verb == "block_ip" and a.status == ActionStatus.EXECUTED
    }
    assert NEW_C2 in blocked
    assert "joins:merge:c2" in {a.finding_info.uid for a in survivor.incident.alerts}
