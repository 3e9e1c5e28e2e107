"""Scoring and planning: what stanch proposes to do about an incident."""

from __future__ import annotations

from flows.models import Stage
from flows.respond import BLOCK_TTL_SECONDS, assess, containment_plans, remediation_plans
from integrations.capabilities import Capability, Host, UserAccount
from integrations.ocsf import SeverityId
from tests.flows.factories import incident

HOST = Host(id="aid-1", hostname="WS-0042", vendor="crowdstrike")
USER = UserAccount(id="00u1", login="jdoe@acme.example", vendor="okta")


def test_correlated_critical_incident_is_a_true_positive() -> None:
    """Given the demo incident with its host and user both found,
    When assessed,
    Then severity, correlation and agreement add up to a true positive with reasons."""
    found = assess(incident(), {"WS-0042": HOST}, {"jdoe@acme.example": USER})
    assert found.verdict == "true_positive"
    assert found.risk_score == 100
    assert any("correlate" in r for r in found.reasons)
    assert found.hosts["WS-0042"]["id"] == "aid-1"


def test_low_severity_unknown_entities_are_benign() -> None:
    """Given a low-severity incident whose host and user are unknown,
    When assessed and planned,
    Then the verdict is benign, the unknowns are named, and nothing is planned."""
    inc = incident()
    low = [a.model_copy(update={"severity_id": SeverityId.LOW}) for a in inc.alerts]
    inc = inc.model_copy(update={"alerts": low})
    found = assess(inc, {"WS-0042": None}, {"jdoe@acme.example": None})
    assert found.verdict == "benign"
    assert "host WS-0042 is unknown to the EDR" in found.reasons
    assert containment_plans(inc, found) == []
    assert remediation_plans(inc, found) == []


def test_containment_plans_cover_host_user_and_internet_ips() -> None:
    """Given a true positive,
    When containment is planned,
    Then the host is contained, the user suspended and signed out, each internet IP blocked
    for a day, all by vendor-side id and labelled for humans."""
    inc = incident()
    plans = containment_plans(inc, assess(inc, {"WS-0042": HOST}, {"jdoe@acme.example": USER}))
    summary = [(p.action, p.target, p.target_label) for p in plans]
    assert summary == [
        ("edr.contain_host", "aid-1", "WS-0042"),
        ("identity.suspend_user", "00u1", "jdoe@acme.example"),
        ("identity.revoke_sessions", "00u1", "jdoe@acme.example"),
        ("firewall.block_ip", "203.0.113.66", "203.0.113.66"),
        ("firewall.block_ip", "198.51.100.77", "198.51.100.77"),
    ]
    assert all(p.stage == Stage.CONTAIN and p.incident_id == inc.id for p in plans)
    assert plans[3].parameters["ttl_seconds"] == BLOCK_TTL_SECONDS


def test_remediation_blocks_hashes_and_leaves_the_suspended_password_to_the_release() -> None:
    """Given a true positive whose user containment suspends,
    When remediation is planned,
    Then it blocks the hash and does not expire the password: Okta refuses that for a
    suspended user (403 E0000038); `stanch undo` expires it after the unsuspend."""
    inc = incident()
    found = assess(inc, {"WS-0042": HOST}, {"jdoe@acme.example": USER})
    plans = remediation_plans(inc, found)
    assert [(p.capability, p.verb) for p in plans] == [(Capability.EDR, "block_hash")]
    assert plans[0].target == inc.sha256s[0]
