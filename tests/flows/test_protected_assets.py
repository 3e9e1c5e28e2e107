"""Protected assets are matched by what the investigation found them to be, not by a label.

A playbook step may give no ``label``, so the plan's label falls back to the vendor's host
id, which no ``DC-*`` pattern matches. The flow must match protected hosts against the
host's name and addresses from the EDR, always.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flows.models import ActionStatus, Incident, IncidentOutcome, Verdict
from flows.record import Store, open_store
from flows.settings import load_settings
from flows.wiring import default_lab
from tests.flows import factories
from tests.flows.flowrun import approve, run

pytestmark = pytest.mark.usefixtures("prefect_server")

PLAYBOOK = """\
id: isolate-unlabelled
version: 1
title: Isolate a host, no label on the step
owner: soc-leads
trigger:
  sources: [crowdstrike]
  min_severity: low
steps:
  investigate:
    - id: hosts
      action: edr.find_host
      for_each: "{{ incident.hostnames }}"
      args:
        hostname: "{{ item }}"
  contain:
    - id: isolate
      action: edr.contain_host
      for_each: "{{ steps.hosts.result }}"
      args:
        host_id: "{{ item.id }}"
        reason: "stanch {{ incident.id }}"
"""

POLICY = """\
version: 1
tenant: guarded
approvers:
  cli: true
  cli_users: ["*"]
protected:
  on_match: forbidden
  hosts: ["DC-*"]
actions:
  edr.contain_host:
    unattended_from: informational
"""


@pytest.fixture
def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tenant ``guarded``: isolation is unattended, but never of a ``DC-*`` host."""
    playbooks, policies = tmp_path / "playbooks", tmp_path / "policies"
    playbooks.mkdir()
    policies.mkdir()
    (playbooks / "isolate-unlabelled.yaml").write_text(PLAYBOOK)
    (policies / "guarded.yaml").write_text(POLICY)
    (policies / "default.yaml").write_text(POLICY.replace("tenant: guarded\n", ""))
    monkeypatch.setenv("STANCH_PLAYBOOKS_DIR", str(playbooks))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


def _on_host(number: int, hostname: str) -> Incident:
    """The demo incident, its ransomware alert moved to ``hostname``."""
    base = factories.incident(number, tenant="guarded")
    alerts = json.loads(json.dumps([a.model_dump(mode="json") for a in base.alerts]))
    moved = json.loads(json.dumps(alerts).replace("WS-0042", hostname))
    return factories.incident(
        number, tenant="guarded", title=f"ransomware on {hostname}", alerts=moved
    )


@pytest.mark.usefixtures("guarded")
async def test_a_protected_host_is_not_contained_when_the_step_has_no_label(
    store: Store,
) -> None:
    """Given a playbook isolating hosts by vendor id with no label, and a policy that
    forbids acting on DC-* hosts,
    When handle-incident runs for ransomware on DC-01,
    Then the containment is forbidden because of the host's name as the EDR knows it, and
    the EDR never receives a containment request."""
    default_lab().reset()
    incident = _on_host(9201, "DC-01")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    assert outcome.playbook == "isolate-unlabelled"
    [host] = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    assert host.plan.target_label == host.plan.target, "the step gave no label"
    assert (host.verdict, host.status) == (Verdict.FORBIDDEN, ActionStatus.FORBIDDEN)
    assert "protected host pattern DC-*" in (host.error or "")
    edr = default_lab().simulator("crowdstrike")
    assert not [r for r in edr.requests if "devices-actions" in r.path]


@pytest.mark.usefixtures("guarded")
async def test_an_unprotected_host_is_contained_unattended_by_the_same_playbook(
    store: Store,
) -> None:
    """Given the same playbook and policy,
    When the incident is on WS-0042 instead,
    Then it is isolated unattended: the refusal above is the protection, not the setup."""
    default_lab().reset()
    outcome, _ = await run(_on_host(9202, "WS-0042"), store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    [host] = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    assert (host.verdict, host.status) == (Verdict.UNATTENDED, ActionStatus.EXECUTED)
