"""The default rules of engagement."""

from __future__ import annotations

from flows.models import Stage, Verdict
from flows.policy import DefaultPolicy
from integrations.capabilities import Capability
from tests.flows.factories import incident, plan


def test_containment_needs_one_approval() -> None:
    """Given a host containment plan, When policy decides, Then one approval is required."""
    decision = DefaultPolicy().decide(plan(), incident())
    assert decision.verdict == Verdict.APPROVAL
    assert decision.approvals_required == 1
    assert "critical" in decision.reason


def test_tightening_remediation_is_unattended() -> None:
    """Given a hash block, When policy decides, Then it runs unattended."""
    p = plan(verb="block_hash", target="a" * 64, target_label="aaaa", stage=Stage.REMEDIATE)
    assert DefaultPolicy().decide(p, incident()).verdict == Verdict.UNATTENDED


def test_protected_assets_are_never_touched() -> None:
    """Given plans against a domain controller and a break-glass account (any case),
    When policy decides,
    Then both are forbidden, naming the pattern."""
    dc = DefaultPolicy().decide(plan(target_label="DC-01"), incident())
    glass = DefaultPolicy().decide(
        plan(capability=Capability.IDENTITY, verb="suspend_user", target_label="BreakGlass-1"),
        incident(),
    )
    assert dc.verdict == glass.verdict == Verdict.FORBIDDEN
    assert "DC-*" in dc.reason
