"""The ransomware playbook hunts the incident's hash and contains the other hosts it finds.

Through ``handle-incident`` with the real store: the lab fleet has the demo's ransomware
on WS-0042 (the host that alerted), WS-0107 and SRV-FS01. The tenant's policy lets host
containment run unattended, yet the hunted hosts raised no alert of their own, so the
playbook's ``approval: required`` sends their containment to a person.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flows.models import ActionStatus, IncidentOutcome
from flows.record import Ledger, Store, open_store
from flows.settings import load_settings
from flows.wiring import connect, default_lab
from integrations.capabilities import Containment
from tests.flows import factories
from tests.flows.flowrun import approve, deny, run

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]
HUNTED = {"WS-0107", "SRV-FS01"}


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


@pytest.fixture(autouse=True)
def fresh_lab() -> None:
    default_lab().reset()


@pytest.fixture(autouse=True)
def unattended_containment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default policy, but host containment is pre-authorised at every severity."""
    policies = tmp_path / "policies"
    policies.mkdir()
    default = (REPO / "policies" / "default.yaml").read_text()
    rule = "  edr.contain_host:\n    approvals: 1\n"
    assert rule in default
    unattended = "  edr.contain_host:\n    unattended_from: informational\n"
    (policies / "default.yaml").write_text(default.replace(rule, unattended))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))


async def _containment(hostnames: set[str]) -> dict[str, Containment]:
    async with connect(load_settings()) as live:
        found = {name: await live.edr.find_host(name) for name in hostnames}
    return {name: host.containment for name, host in found.items() if host is not None}


@pytest.mark.parametrize(("responder", "approved"), [(approve, True), (deny, False)])
async def test_hunted_hosts_are_contained_only_through_approval(
    store: Store, responder: object, approved: bool
) -> None:
    """Given the demo incident, a fleet with its hash on two more hosts, and a policy that
    pre-authorises host containment
    When handle-incident runs and the analyst approves (or denies)
    Then the alerting host is contained unattended, the two hunted hosts are in the
    approval request, and they are contained only when it is approved."""
    incident = factories.incident(7100 + int(approved))
    outcome, answered = await run(incident, store, responder)  # type: ignore[arg-type]
    assert isinstance(outcome, IncidentOutcome), outcome
    hosts = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    by_label = {a.plan.target_label: a for a in hosts}
    assert set(by_label) == {"WS-0042", *HUNTED}
    assert by_label["WS-0042"].approved_by == ["policy:unattended"]
    assert by_label["WS-0042"].status == ActionStatus.EXECUTED

    [row] = await store.approvals(incident_id=incident.id)
    assert answered == [row.id]
    asked = {p["target_label"] for p in row.plans["plans"] if p["verb"] == "contain_host"}
    assert asked == HUNTED
    states = await _containment({"WS-0042", *HUNTED})
    assert states["WS-0042"] is not Containment.NORMAL
    for name in HUNTED:
        action = by_label[name]
        if approved:
            assert action.status == ActionStatus.EXECUTED and action.approved_by == ["cli:alice"]
            assert states[name] is not Containment.NORMAL
        else:
            assert action.status != ActionStatus.EXECUTED
            assert states[name] is Containment.NORMAL
    # The investigate stage's hunt: stored with the incident, in the approval evidence,
    # in the score and in the report.
    [hunt] = [h for h in await store.hunts(incident.id) if h.kind == "sha256"]
    assert (hunt.value, hunt.host_count, hunt.other_hosts) == (incident.sha256s[0], 3, 2)
    assert set(hunt.hosts) == {"WS-0042", *HUNTED}
    assert hunt.line() in row.plans["context"]["hunt"]
    assert any("other host(s) in the fleet (+10)" in r for r in outcome.investigation.reasons)
    report = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    section = report.split("## Hunt", 1)[1].split("\n## ", 1)[0]
    # Markdown-escaped, as every EDR-given name in the report is.
    assert "3 host\\(s\\)" in section and "WS\\-0107, SRV\\-FS01" in section

    entries = await Ledger(store).export(incident.id)
    contained = {
        e["target_label"]
        for e in entries
        if e["kind"] == "action" and e["verb"] == "contain_host" and e["status"] == "executed"
    }
    assert contained >= HUNTED if approved else not (HUNTED & contained)
