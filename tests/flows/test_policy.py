"""The shipped default rules of engagement, as the lifecycle loads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.models import Stage, Verdict
from flows.policy import policy_for_tenant
from flows.settings import policy_directory
from integrations.capabilities import Capability
from tests.flows.factories import incident, plan

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def default_policy():  # type: ignore[no-untyped-def]
    return policy_for_tenant(policy_directory(None), "someone-without-a-file")


def test_the_bundled_policies_are_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a working directory without policies/, When the directory is resolved,
    Then the repository's bundled policies are used; a configured one always wins."""
    monkeypatch.chdir(tmp_path)
    assert policy_directory(None).resolve() == REPO_POLICIES
    assert policy_directory(tmp_path) == tmp_path


def test_containment_needs_one_approval() -> None:
    """Given a host containment plan, When the default policy decides, Then one approval."""
    decision = default_policy().decide(plan(), incident())
    assert decision.verdict == Verdict.APPROVAL
    assert decision.approvals_required == 1


def test_tightening_remediation_is_unattended() -> None:
    """Given a hash block, When the default policy decides, Then it runs unattended."""
    p = plan(verb="block_hash", target="a" * 64, target_label="aaaa", stage=Stage.REMEDIATE)
    assert default_policy().decide(p, incident()).verdict == Verdict.UNATTENDED


def test_protected_assets_are_never_touched() -> None:
    """Given plans against a domain controller and a break-glass account,
    When the default policy decides, Then both are forbidden."""
    dc = default_policy().decide(plan(target_label="DC-01"), incident())
    glass = default_policy().decide(
        plan(capability=Capability.IDENTITY, verb="suspend_user", target_label="breakglass-1"),
        incident(),
    )
    assert dc.verdict == glass.verdict == Verdict.FORBIDDEN
