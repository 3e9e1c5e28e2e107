"""The six library playbooks: realistic, commented, and equal to the built-in response."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.models import Incident, Stage
from flows.playbook import adapter_lookup, load_playbook, load_playbooks, plan_playbook, route
from flows.respond import assess, containment_plans, remediation_plans
from flows.settings import StanchSettings
from flows.wiring import Lab, connect
from stanch.playbook_cli import lab_lookup
from tests.playbooks.helpers import PLAYBOOKS

LIBRARY = {p.id: p for p in load_playbooks(PLAYBOOKS)}


def _demo_incident(edr: str, identity: str) -> Incident:
    from stanch.demo import scenario_alerts

    now = datetime.now(UTC)
    return Incident(
        id=f"INC-{now:%Y%m%d}-0042",
        tenant="demo",
        title="ransomware on WS-0042",
        alerts=scenario_alerts(now, edr=edr, identity=identity),
    )


@pytest.mark.parametrize(("edr", "identity"), [("crowdstrike", "okta"), ("sentinelone", "entra")])
async def test_ransomware_plans_equal_the_built_in_response_for_the_demo(
    edr: str, identity: str
) -> None:
    """Given the demo scenario and lab simulators that know its host and user,
    When the built-in response and the ransomware playbook plan it against the same lookups,
    Then the plans are equal: same actions, targets, labels, parameters, stages, order."""
    incident = _demo_incident(edr, identity)
    settings = StanchSettings(mode="lab", edr=edr, identity=identity)
    lab = Lab(fleet=False)  # the hunt finds no other host, so no isolate_hunted plan
    for hostname in incident.hostnames:
        lab.simulator(edr).add_host(hostname)  # type: ignore[attr-defined]
    for login in incident.users:
        lab.simulator(identity).add_user(login)  # type: ignore[attr-defined]
    async with connect(settings, lab) as found:
        hosts = {h: await found.edr.find_host(h) for h in incident.hostnames}
        users = {u: await found.identity.find_user(u) for u in incident.users}
        investigation = assess(incident, hosts, users)
        lookup = adapter_lookup({c: found.adapter(c) for c in found.vendors})
        playbook = await plan_playbook(LIBRARY["ransomware"], incident, lookup)
    assert route(incident, list(LIBRARY.values())).chosen is LIBRARY["ransomware"]
    assert playbook.plans(Stage.CONTAIN) == containment_plans(incident, investigation)
    assert playbook.plans(Stage.REMEDIATE) == remediation_plans(incident, investigation)
    assert len(playbook.plans()) == 6


def test_the_library_has_its_playbooks_each_commented_and_owned() -> None:
    """Given playbooks/,
    When the files are read,
    Then the seven playbooks are there, each opening with a comment and naming ATT&CK ids
    (but triage and the event-driven SIEM playbook, which answer no technique)."""
    assert set(LIBRARY) == {
        "ransomware",
        "compromised-account",
        "c2-beacon",
        "phishing-click",
        "entra-risky-signin",
        "triage-low",
        "siem-detection",
    }
    for pid, loaded in LIBRARY.items():
        text = Path(loaded.file).read_text(encoding="utf-8")
        # A YAML playbook opens with a comment, a Python one with its docstring.
        assert text.startswith("# " if loaded.file.endswith(".yaml") else '"""'), pid
        assert loaded.spec.owner
        assert loaded.spec.attack or pid in ("triage-low", "siem-detection")


def test_triage_never_contains_or_remediates() -> None:
    """Given the triage playbook,
    When its steps are listed,
    Then it only looks up and reports: no step in contain or remediate, no mutating action."""
    triage = LIBRARY["triage-low"]
    assert not triage.stages[Stage.CONTAIN] and not triage.stages[Stage.REMEDIATE]
    assert all(s.action is None or s.action.lookup for s in triage.steps())


@pytest.mark.parametrize(
    ("pid", "kinds"),
    [
        ("ransomware", {"tell_owner": "notify"}),
        ("compromised-account", {"tell_manager": "notify"}),
        ("entra-risky-signin", {"confirm_compromised": "manual"}),
    ],
)
def test_work_stanch_cannot_do_is_an_honest_step(pid: str, kinds: dict[str, str]) -> None:
    """Given the library playbooks,
    When the steps for hunting, notifying and URL blocking are looked up,
    Then each is a hunt, notify or manual step, never a made-up action."""
    steps = {s.id: s.step.kind for s in LIBRARY[pid].steps()}
    for step, kind in kinds.items():
        assert steps[step] == kind


async def test_releasing_hosts_waits_for_a_human_confirmation() -> None:
    """Given the ransomware playbook,
    When its release step is inspected and planned without confirmation,
    Then it requires approval and is listed as waiting, not planned."""
    ransomware = load_playbook(PLAYBOOKS / "ransomware.yaml")
    [release] = [s for s in ransomware.steps() if s.id == "release_hosts"]
    assert release.step.approval == "required" and release.step.confirm
    incident = _demo_incident("crowdstrike", "okta")
    async with lab_lookup(incident) as lookup:
        result = await plan_playbook(ransomware, incident, lookup)
    assert "release_host" not in {p.verb for p in result.plans()}
    assert ("release_hosts", "waiting") in {(n.step, n.status) for n in result.notes}
