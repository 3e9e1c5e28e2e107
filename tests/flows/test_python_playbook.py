"""A Python playbook through the real handle-incident flow, and the events stanch emits.

The session's Prefect server, the lab simulators, the loopback FakeSlack and the approval
service with the real ``submit_decision``: the library's ``phishing-click.py`` is routed,
planned, approved by a Slack click and executed; a playbook that tries to act itself acts
on nothing; the run's events reach Prefect, and an automation fires on one of them.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from flows.lifecycle import handle_incident
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.record import Store, events
from flows.settings import load_settings
from flows.wiring import default_lab
from integrations.ocsf import DetectionFinding
from integrations.slack.fake import FakeSlack
from stanch.demo import provision_lab
from stanch.prefect_server import drain_prefect_clients
from tests.flows.test_slack_gate import click_approve, fake, fresh_lab, run, service, store

pytestmark = pytest.mark.usefixtures("prefect_server")
__all__ = ["fake", "fresh_lab", "service", "store"]  # fixtures, used by name

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "playbooks" / "examples"
PREFECT_YAML = ROOT / "prefect.yaml"
_numbers = iter(range(8100, 8200))


def phishing_incident() -> Incident:
    """The phishing-click example alert as an incident of today."""
    data = json.loads((EXAMPLES / "phishing-click" / "url-click.json").read_text())
    # A fresh uid per test: the alert is the example's, its identity this test's.
    number = next(_numbers)
    data["finding_info"]["uid"] = f"{data['finding_info']['uid']}:{number}"
    now = datetime.now(UTC)
    return Incident(
        id=f"INC-{now:%Y%m%d}-{number:04d}",
        tenant="demo",
        title="phishing link clicked by apatel",
        created_at=now,
        alerts=[DetectionFinding.model_validate(data)],
    )


async def stanch_events(incident_id: str, since: datetime) -> list[tuple[str, dict[str, str]]]:
    """(name, resource) of every stanch event about ``incident_id`` the server has stored."""
    await drain_prefect_clients()
    found: list[tuple[str, dict[str, str]]] = []
    async with get_client() as client:
        for _ in range(50):
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
                    event=EventNameFilter(prefix=["stanch."]),
                    resource=EventResourceFilter(id=[f"stanch.incident.{incident_id}"]),
                ),
                limit=50,
            )
            found = [
                (e.event, dict(e.resource.root))
                for e in page.events
                if e.resource.id == f"stanch.incident.{incident_id}"
            ]
            if any(name == "stanch.action.executed" for name, _ in found):
                break
            await asyncio.sleep(0.2)  # the server persists events in the background
    return found


async def test_a_python_playbook_is_approved_in_slack_and_executed(
    fake: FakeSlack, service: object
) -> None:
    """Given the library's phishing-click.py and Slack approvals,
    When the phishing example incident runs through handle-incident and Alice approves
    the containment in Slack,
    Then the Python playbook planned it, the revoked sessions and the blocked address are
    executed as slack:UALICE at the vendors, its stage functions and lookups show as task
    runs, and the run's events reached Prefect with the incident as their resource."""
    incident = phishing_incident()
    since = datetime.now(UTC) - timedelta(seconds=1)
    outcome, handled = await run(incident, service, click_approve)  # type: ignore[arg-type]

    assert isinstance(outcome, IncidentOutcome), outcome
    assert outcome.playbook == "phishing-click"
    assert handled and all(h is not None and h.outcome == "final" for h in handled)
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert sorted(a.plan.action for a in contain) == [
        "firewall.block_ip",
        "identity.revoke_sessions",
    ]
    assert all(a.status == ActionStatus.EXECUTED for a in contain)
    assert all(a.approved_by == ["slack:UALICE"] for a in contain)
    assert any("other_recipients" in note for note in outcome.playbook_notes)

    async with get_client() as client:
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(outcome.flow_run_id)]))
        )
    names = {t.name for t in tasks}
    # Every stage function plans while the incident is investigated; the plans then run
    # (and are named) in their own stage.
    assert {
        "[investigate] phishing-click.investigate",
        "[investigate] phishing-click.contain",
        "[investigate] phishing-click.remediate",
    } <= names, names
    assert "[contain] identity.revoke_sessions apatel@acme.example · okta" in names, names

    seen = await stanch_events(incident.id, since)
    kinds = [name for name, _ in seen]
    for name in (
        "stanch.incident.opened",
        "stanch.approval.requested",
        "stanch.approval.decided",
        "stanch.action.executed",
    ):
        assert name in kinds, (name, kinds)
    resource = dict(seen[0][1])
    assert resource["stanch.tenant"] == "demo"
    assert resource["stanch.playbook"] == "phishing-click"
    assert resource["stanch.severity"] == incident.severity.name.lower()


async def test_a_python_playbook_that_acts_itself_contains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: object
) -> None:
    """Given a playbooks directory whose only playbook calls ctx.edr.contain_host in its
    investigate function,
    When the demo incident runs through handle-incident,
    Then the run fails at investigate with the refusal in its report, no containment
    request reached the EDR, and the host is not contained."""
    (tmp_path / "grabby.py").write_text(
        textwrap.dedent(
            """\
            from flows.playbook import StageContext, define_playbook

            book = define_playbook(
                id="grabby", version=1, title="Acts itself", owner="mallory",
                trigger={"min_severity": "informational"},
            )


            @book.investigate
            async def investigate(ctx: StageContext) -> None:
                for name in ctx.incident.hostnames:
                    host = await ctx.edr.find_host(hostname=name)
                    await ctx.edr.contain_host(host.id, reason="no policy needed")
            """
        )
    )
    monkeypatch.setenv("STANCH_PLAYBOOKS_DIR", str(tmp_path))
    from tests.flows import factories

    incident = factories.incident(next(_numbers))
    settings = load_settings()
    await store.save_incident(incident)  # type: ignore[attr-defined]
    provision_lab(default_lab(), settings, incident)
    state = await handle_incident(incident, return_state=True)
    assert state.is_failed()

    edr = default_lab().simulator("crowdstrike")
    assert not [r for r in edr.requests if "devices-actions" in r.path]
    report = json.loads((settings.reports / f"{incident.id}.json").read_text())
    [investigate] = [s for s in report["stages"] if s["stage"] == "investigate"]
    assert investigate["state"] == "failed"
    assert "edr.contain_host changes the vendor's state" in investigate["note"]


async def test_an_automation_fires_on_a_stanch_event() -> None:
    """Given an automation on the test server that reacts to stanch.approval.requested for
    tenant acme only,
    When stanch emits that event for an acme incident (and one for another tenant),
    Then Prefect records the automation as triggered once, for the acme event."""
    from tests.flows import factories

    acme = factories.incident(next(_numbers), tenant="acme")
    other = factories.incident(next(_numbers), tenant="globex")
    async with get_client() as client:
        automation_id = await client.create_automation(
            AutomationCore(
                name=f"approval waiting {acme.id}",
                trigger=EventTrigger(
                    expect={"stanch.approval.requested"},
                    match={"stanch.tenant": "acme", "prefect.resource.id": "stanch.incident.*"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=[{"type": "do-nothing"}],
            )
        )
    try:
        since = datetime.now(UTC) - timedelta(seconds=1)
        await asyncio.sleep(1)  # the triggers service loads new automations on its own tick
        for incident in (other, acme):
            events.approval_requested(
                incident,
                "ransomware",
                approval_id=f"APR-{incident.id}",
                stage="contain",
                sha256s=["0" * 64],
                actions=["edr.contain_host"],
                deadline=(datetime.now(UTC) + timedelta(minutes=15)).isoformat(),
            )
        await drain_prefect_clients()
        triggered: list[str] = []
        async with get_client() as client:
            for _ in range(100):
                page = await client.read_events(
                    filter=EventFilter(
                        occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
                        event=EventNameFilter(name=["prefect.automation.triggered"]),
                        resource=EventResourceFilter(id=[f"prefect.automation.{automation_id}"]),
                    ),
                    limit=50,
                )
                triggered = [
                    str(
                        e.payload.get("triggering_event", {})
                        .get("resource", {})
                        .get("prefect.resource.id")
                    )
                    for e in page.events
                    if e.resource.id == f"prefect.automation.{automation_id}"
                ]
                if triggered:
                    break
                await asyncio.sleep(0.2)
        assert triggered == [f"stanch.incident.{acme.id}"]
    finally:
        async with get_client() as client:
            await client.delete_automation(automation_id)


async def test_a_proactive_trigger_runs_the_overdue_flow_for_the_waiting_incident() -> None:
    """Given the approval-overdue flow deployed with prefect.yaml's trigger (its window cut
    to Prefect's 10 s minimum),
    When stanch.approval.requested is emitted for one incident and no decision follows,
    while another incident's request is decided in time,
    Then Prefect schedules one approval-overdue run, for the waiting incident only, with
    its id rendered from the event into the run's parameters."""
    import yaml
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.approval.overdue import approval_overdue
    from tests.flows import factories

    config = yaml.safe_load(PREFECT_YAML.read_text())
    [declared] = [d for d in config["deployments"] if d["name"] == "approval-overdue"]
    trigger_spec = {**declared["triggers"][0], "within": 10}
    waiting = factories.incident(next(_numbers))
    decided = factories.incident(next(_numbers))
    suffix = waiting.id.lower()
    deployment = await approval_overdue.to_deployment(
        name=f"overdue-{suffix}",
        triggers=[DeploymentEventTrigger.model_validate(trigger_spec)],
    )
    deployment_id = await deployment.apply()
    try:
        await asyncio.sleep(1)  # the triggers service loads new automations on its own tick
        for incident in (waiting, decided):
            events.approval_requested(
                incident,
                None,
                approval_id=f"APR-{incident.id}",
                stage="contain",
                sha256s=["0" * 64],
                actions=["edr.contain_host"],
                deadline=(datetime.now(UTC) + timedelta(minutes=15)).isoformat(),
            )
        events.approval_decided(
            decided,
            None,
            approval_id=f"APR-{decided.id}",
            status="approved",
            approved=["0" * 64],
            approvers=["cli:alice"],
            channel="cli",
        )
        await drain_prefect_clients()
        runs = []
        async with get_client() as client:
            for _ in range(150):
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
                if runs:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # a second, wrong run would have had time to appear
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
        assert [r.parameters for r in runs] == [{"incident_id": waiting.id}]
    finally:
        async with get_client() as client:
            for automation in await client.read_automations():
                if any(
                    getattr(a, "deployment_id", None) == deployment_id for a in automation.actions
                ):
                    await client.delete_automation(automation.id)
            await client.delete_deployment(deployment_id)


async def test_a_playbook_runs_on_the_event_its_trigger_names(store: Store) -> None:
    """Given prefect.yaml's siem-detection-on-event trigger applied to the test server and
    the lab knowing the host and user the SIEM names,
    When the SIEM's siem.detection.raised event is emitted for tenant demo,
    Then Prefect schedules a playbook-on-event run carrying the event; run, it opens an
    incident of that tenant made of the event, runs siem-detection on it, and (approved)
    isolates the host the event named at the EDR."""
    import yaml
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.lifecycle import playbook_on_event
    from tests.flows.test_lifecycle import approve

    config = yaml.safe_load(PREFECT_YAML.read_text())
    [declared] = [d for d in config["deployments"] if d["name"] == "siem-detection-on-event"]
    host = f"WS-{next(_numbers)}"
    lab = default_lab()
    lab.simulator("crowdstrike").add_host(host)  # type: ignore[attr-defined]
    lab.simulator("okta").add_user("mgarcia@acme.example")  # type: ignore[attr-defined]
    deployment = await playbook_on_event.to_deployment(
        name=f"siem-{host.lower()}",
        parameters=declared["parameters"],
        triggers=[
            DeploymentEventTrigger.model_validate(
                {**declared["triggers"][0], "match": {"prefect.resource.id": f"siem.{host}"}}
            )
        ],
    )
    deployment_id = await deployment.apply()
    try:
        await asyncio.sleep(1)  # the triggers service loads new automations on its own tick
        emit_event(
            "siem.detection.raised",
            resource={
                "prefect.resource.id": f"siem.{host}",
                "stanch.tenant": "demo",
                "stanch.severity": "high",
            },
            payload={"title": f"Lateral movement from {host}", "hostnames": [host]},
        )
        await drain_prefect_clients()
        runs = []
        async with get_client() as client:
            for _ in range(150):
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
                )
                if runs:
                    break
                await asyncio.sleep(0.2)
        [scheduled] = runs
        assert scheduled.parameters["playbook"] == "siem-detection"
        event = scheduled.parameters["event"]
        assert event["event"] == "siem.detection.raised"
        assert event["resource"]["stanch.tenant"] == "demo"
    finally:
        async with get_client() as client:
            for automation in await client.read_automations():
                if any(
                    getattr(a, "deployment_id", None) == deployment_id for a in automation.actions
                ):
                    await client.delete_automation(automation.id)
            await client.delete_deployment(deployment_id)

    settings = load_settings()

    async def analyst() -> None:
        answered: set[str] = set()
        while True:
            for row in await store.approvals(status="pending"):
                labels = {plan["target_label"] for plan in row.plans["plans"]}
                if row.id not in answered and host in labels:
                    answered.add(row.id)
                    await approve(store, settings, row)
            await asyncio.sleep(0.2)

    helper = asyncio.create_task(analyst())
    try:
        outcome = await playbook_on_event("siem-detection", event)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)
    assert outcome.playbook == "siem-detection"
    assert outcome.incident.tenant == "demo"
    [isolate] = [a for a in outcome.actions if a.plan.action == "edr.contain_host"]
    assert (isolate.plan.target_label, isolate.status) == (host, ActionStatus.EXECUTED)
    assert isolate.approved_by == ["cli:alice"]


async def test_an_event_without_a_tenant_is_refused_and_kept(store: Store) -> None:
    """Given a siem.detection event whose resource names no tenant,
    When playbook-on-event runs on it,
    Then it fails naming resource.stanch.tenant, no incident is opened, and the event is
    kept as a dead letter with that field."""
    from flows.errors import AlertRejected
    from flows.lifecycle import playbook_on_event

    event = {
        "id": "00000000-0000-4000-8000-000000000001",
        "event": "siem.detection.raised",
        "occurred": datetime.now(UTC).isoformat(),
        "resource": {"prefect.resource.id": "siem.anything"},
        "payload": {"hostnames": ["WS-0001"]},
    }
    before = len(await store.dead_letters())
    with pytest.raises(AlertRejected) as caught:
        await playbook_on_event("siem-detection", event)
    assert caught.value.field == "resource.stanch.tenant"
    kept = (await store.dead_letters())[before:]
    assert [(k.source, k.field) for k in kept] == [
        ("prefect-event/siem-detection", "resource.stanch.tenant")
    ]


async def test_closing_a_case_emits_incident_closed(store: Store) -> None:
    """Given a saved incident of tenant acme,
    When an analyst closes its case as a false positive,
    Then Prefect receives stanch.incident.closed for it, labelled with the tenant, naming
    the disposition and who closed it."""
    from flows.record import CaseBook
    from tests.flows import factories

    incident = factories.incident(next(_numbers), tenant="acme")
    await store.save_incident(incident)
    since = datetime.now(UTC) - timedelta(seconds=1)
    await CaseBook(store).close(
        incident.id, disposition="false-positive", summary="test traffic", actor="cli:alice"
    )
    await drain_prefect_clients()
    closed = []
    async with get_client() as client:
        for _ in range(50):
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=since, until=datetime.now(UTC)),
                    event=EventNameFilter(name=["stanch.incident.closed"]),
                    resource=EventResourceFilter(id=[f"stanch.incident.{incident.id}"]),
                ),
                limit=50,
            )
            closed = page.events
            if closed:
                break
            await asyncio.sleep(0.2)
    [event] = closed
    assert event.resource["stanch.tenant"] == "acme"
    assert event.payload["disposition"] == "false-positive"
    assert event.payload["closed_by"] == "cli:alice"
