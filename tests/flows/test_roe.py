"""Per-tenant rules of engagement: schema, loader with line numbers, and the evaluator."""

from __future__ import annotations

import re
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flows.models import ActionPlan, Incident, Stage, Verdict
from flows.policy import (
    KNOWN_ACTIONS,
    Policy,
    PolicyDecision,
    PolicyError,
    PolicyErrorCode,
    RulesFile,
    RulesOfEngagement,
    count_recent_actions,
    load_policy,
    parse_policy,
    policy_for_tenant,
)
from integrations import capabilities
from integrations.capabilities import ActionReceipt, Capability
from integrations.ocsf import DetectionFinding, SeverityId

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "policies"

POLICY = """\
version: 1
tenant: acme
approvers:
  slack_users: [U0ALICE01]
  slack_group: S0SOCLEADS
  slack_group_handle: soc-leads
  cli: true
  cli_users: ["alice@soc-host"]
approval:
  approvals: 1
  timeout: 20m
groups:
  executives: ["ceo@acme.example", "*.vp@acme.example"]
  service: ["svc-*"]
protected:
  hosts: ["DC-*"]
  users: ["breakglass*"]
  ips: ["10.0.0.0/24", "2001:db8::/32"]
actions:
  firewall.block_ip:
    unattended_from: high
  edr.contain_host:
    unattended_from: critical
    budget: {max: 5, per: 1h}
    timeout: 5m
    conditions:
      - user_in_group: executives
        approvals: 2
  identity.suspend_user:
    approvals: 1
    conditions:
      - user_in_group: executives
        approvals: 2
      - user_in_group: service
        forbidden: true
  identity.reset_factors:
    on_timeout: approve
  edr.release_host:
    approvals: 3
  identity.unsuspend_user:
    forbidden: true
"""


def roe(text: str = POLICY, **kwargs: Any) -> RulesOfEngagement:
    return RulesOfEngagement(parse_policy(text), **kwargs)


def incident(
    severity: SeverityId = SeverityId.HIGH, *, users: tuple[str, ...] = (), tenant: str = "acme"
) -> Incident:
    """An incident of one alert at ``severity`` naming ``users``."""
    finding = DetectionFinding.model_validate(
        {
            "class_uid": 2004,
            "category_uid": 2,
            "activity_id": 1,
            "type_uid": 200401,
            "severity_id": int(severity),
            "time": 1_763_700_000_000,
            "metadata": {"version": "1.8.0", "product": {"name": "test"}},
            "finding_info": {"uid": "f-1", "title": "test alert"},
            "evidences": [{"user": {"name": u}} for u in users],
        }
    )
    return Incident(id="INC-20261121-0007", tenant=tenant, title="test", alerts=[finding])


def plan(action: str = "edr.contain_host", target: str = "WS-0042", **overrides: Any) -> ActionPlan:
    capability, _, verb = action.partition(".")
    fields: dict[str, Any] = {
        "tenant": "acme",
        "incident_id": "INC-20261121-0007",
        "capability": Capability(capability),
        "verb": verb,
        "target": f"id-{target}",
        "target_label": target,
        "stage": Stage.CONTAIN,
    }
    fields.update(overrides)
    return ActionPlan(**fields)


def first_issue(text: str) -> tuple[str, int, str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return caught.value.code, caught.value.line, caught.value.field


# Schema pinned to the code it describes -------------------------------------------------
def test_known_actions_are_the_mutating_verbs_of_each_capability_protocol() -> None:
    """Given the capability protocols,
    When their methods returning an ActionReceipt are listed,
    Then they are exactly the verbs a policy may name."""
    protocols = {
        Capability.EDR: capabilities.EDR,
        Capability.IDENTITY: capabilities.IdentityProvider,
        Capability.FIREWALL: capabilities.Firewall,
        Capability.ALERTS: capabilities.AlertSource,
    }
    for capability, protocol in protocols.items():
        verbs = {
            name
            for name, member in vars(protocol).items()
            if callable(member)
            and not name.startswith("_")
            and typing.get_type_hints(member).get("return") is ActionReceipt
        }
        assert KNOWN_ACTIONS[capability] == verbs, capability


def test_roe_is_a_policy() -> None:
    """Given rules of engagement used where the flow expects a Policy,
    When decide is called the way the flow calls it (plan, incident),
    Then it returns a PolicyDecision."""
    policy: Policy = roe()
    decision = policy.decide(plan("edr.block_hash", "a" * 64), incident())
    assert isinstance(decision, PolicyDecision)
    assert decision.verdict is Verdict.APPROVAL


# Severity thresholds --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("severity", "verdict"),
    [
        (SeverityId.LOW, Verdict.APPROVAL),
        (SeverityId.MEDIUM, Verdict.APPROVAL),
        (SeverityId.HIGH, Verdict.UNATTENDED),
        (SeverityId.CRITICAL, Verdict.UNATTENDED),
    ],
)
def test_unattended_from_a_minimum_severity(severity: SeverityId, verdict: Verdict) -> None:
    """Given firewall.block_ip unattended from high,
    When incidents of each severity ask to block an address,
    Then below high needs approval and high or above runs unattended."""
    decision = roe().decide(plan("firewall.block_ip", "203.0.113.9"), incident(severity))
    assert decision.verdict is verdict
    assert decision.approvals_required == (1 if verdict is Verdict.APPROVAL else 0)


def test_an_action_without_unattended_from_always_needs_approval() -> None:
    """Given identity.suspend_user with no unattended_from,
    When a fatal incident asks to suspend an ordinary user,
    Then approval is still required."""
    decision = roe().decide(plan("identity.suspend_user", "jdoe"), incident(SeverityId.FATAL))
    assert decision.verdict is Verdict.APPROVAL


# Approver counts and approvers ----------------------------------------------------------
def test_approver_count_comes_from_the_rule_or_the_default() -> None:
    """Given edr.release_host needing 3 and a default of 1,
    When release_host and suspend_user are decided,
    Then they need 3 and 1 distinct approvers, and name who may approve."""
    release = roe().decide(plan("edr.release_host", stage=Stage.REMEDIATE), incident())
    suspend = roe().decide(plan("identity.suspend_user", "jdoe"), incident())
    assert (release.approvals_required, suspend.approvals_required) == (3, 1)
    assert release.approvers.slack_users == ("U0ALICE01",)
    assert release.approvers.slack_group == "S0SOCLEADS"
    assert release.approvers.channels == ("slack", "cli")


def test_the_prefect_ui_is_not_an_approval_channel_unless_enabled() -> None:
    """Given one policy silent on prefect_ui and one enabling it,
    When their approvers are read,
    Then only the second allows the Prefect UI."""
    off = roe().rules.approvers
    on = roe(POLICY.replace("  slack_group_handle", "  prefect_ui: true\n  slack_group_handle"))
    assert off.prefect_ui is False
    assert on.rules.approvers.prefect_ui is True
    assert "prefect-ui" in on.rules.approvers.channels


# Protected assets -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "target", "why"),
    [
        ("edr.contain_host", "dc-01", "protected host pattern DC-*"),
        ("identity.suspend_user", "BreakGlass-admin", "protected user pattern breakglass*"),
        ("firewall.block_ip", "10.0.0.77", "protected range 10.0.0.0/24"),
        ("firewall.block_ip", "2001:db8::53", "protected range 2001:db8::/32"),
    ],
)
def test_protected_assets_are_forbidden(action: str, target: str, why: str) -> None:
    """Given protected hosts, users and ranges (forbidden on match),
    When a critical incident asks to act on one (any letter case),
    Then the action is forbidden, naming the pattern."""
    decision = roe().decide(plan(action, target), incident(SeverityId.CRITICAL))
    assert decision.verdict is Verdict.FORBIDDEN
    assert decision.because[-1] == why


def test_addresses_outside_protected_ranges_are_not_protected() -> None:
    """Given 10.0.0.0/24 protected,
    When a high incident asks to block 10.0.1.1,
    Then it runs unattended."""
    decision = roe().decide(plan("firewall.block_ip", "10.0.1.1"), incident(SeverityId.HIGH))
    assert decision.verdict is Verdict.UNATTENDED


def test_protected_with_approval_needs_more_approvers_and_never_runs_unattended() -> None:
    """Given on_match: approval with 3 approvers,
    When a critical incident (above the unattended threshold) asks to isolate DC-01,
    Then approval by 3 is required and a timeout denies."""
    text = POLICY.replace("protected:\n", "protected:\n  on_match: approval\n  approvals: 3\n")
    decision = roe(text).decide(plan("edr.contain_host", "DC-01"), incident(SeverityId.CRITICAL))
    assert decision.verdict is Verdict.APPROVAL
    assert decision.approvals_required == 3
    assert decision.on_timeout == "deny"


# Conditions -----------------------------------------------------------------------------
def test_a_group_condition_raises_the_approver_count() -> None:
    """Given suspend_user needing 2 approvers for executives,
    When an executive and an ordinary user are to be suspended,
    Then the executive needs 2 and the other 1."""
    exec_ = roe().decide(plan("identity.suspend_user", "Ceo@acme.example"), incident())
    other = roe().decide(plan("identity.suspend_user", "jdoe@acme.example"), incident())
    assert exec_.approvals_required == 2
    assert other.approvals_required == 1


def test_a_group_condition_on_a_host_action_uses_the_incidents_users() -> None:
    """Given contain_host unattended at critical but needing 2 approvers for executives,
    When a critical incident naming a VP asks to isolate that VP's laptop,
    Then it needs 2 approvals instead of running unattended."""
    decision = roe().decide(
        plan("edr.contain_host", "LT-VP-7"),
        incident(SeverityId.CRITICAL, users=("sales.vp@acme.example",)),
        recent_actions=0,
    )
    assert decision.verdict is Verdict.APPROVAL
    assert decision.approvals_required == 2


def test_a_forbidding_condition_forbids() -> None:
    """Given service accounts may never be suspended,
    When a service account is to be suspended,
    Then the action is forbidden."""
    decision = roe().decide(plan("identity.suspend_user", "svc-backup"), incident())
    assert decision.verdict is Verdict.FORBIDDEN
    assert decision.because[-1] == "user in group service"


def test_a_forbidden_action_is_forbidden() -> None:
    """Given identity.unsuspend_user marked forbidden,
    When it is decided,
    Then it is forbidden."""
    decision = roe().decide(plan("identity.unsuspend_user", "jdoe"), incident())
    assert decision.verdict is Verdict.FORBIDDEN


# Blast-radius budgets -------------------------------------------------------------------
class FakeCounter:
    """Answers a fixed count and remembers what it was asked."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.asked: list[tuple[str, str, timedelta]] = []

    def __call__(self, tenant: str, action: str, window: timedelta) -> int:
        self.asked.append((tenant, action, window))
        return self.count


def test_within_the_budget_containment_runs_unattended() -> None:
    """Given contain_host unattended at critical with at most 5 an hour,
    When 4 already ran this hour,
    Then it runs unattended, having asked for this tenant, action and window."""
    counter = FakeCounter(4)
    decision = roe().decide(plan(), incident(SeverityId.CRITICAL), recent_actions=counter)
    assert decision.verdict is Verdict.UNATTENDED
    assert counter.asked == [("acme", "edr.contain_host", timedelta(hours=1))]


def test_past_the_budget_containment_falls_back_to_approval() -> None:
    """Given the same budget,
    When 5 already ran this hour (counted by the constructor's counter),
    Then approval is required and a timeout denies."""
    decision = roe(counter=FakeCounter(5)).decide(plan(), incident(SeverityId.CRITICAL))
    assert decision.verdict is Verdict.APPROVAL
    assert decision.approvals_required == 1
    assert decision.on_timeout == "deny"
    assert decision.because[-1] == "budget spent (5 of 5 per 1h)"


def test_a_budget_that_cannot_be_counted_is_spent() -> None:
    """Given a budgeted action and no counter at all,
    When a critical incident asks for it the way the flow does,
    Then approval is required rather than unattended."""
    decision = roe().decide(plan(), incident(SeverityId.CRITICAL))
    assert decision.verdict is Verdict.APPROVAL
    assert "budget not checked" in decision.reason


def test_a_batch_spends_its_own_budget() -> None:
    """Given 3 containments already this hour and a budget of 5,
    When four containments are decided together,
    Then the first two run unattended and the rest need approval."""
    plans = [plan(target=f"WS-{n}") for n in range(4)]
    decisions = roe().decide_all(plans, incident(SeverityId.CRITICAL), recent_actions=3)
    assert [d.verdict for d in decisions] == [
        Verdict.UNATTENDED,
        Verdict.UNATTENDED,
        Verdict.APPROVAL,
        Verdict.APPROVAL,
    ]


def test_count_recent_actions_counts_this_tenants_started_or_executed_actions() -> None:
    """Given store rows of several tenants, actions, statuses and ages (some naive UTC),
    When the last hour of acme's contain_host is counted,
    Then only the started or executed ones inside the window count."""
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def row(tenant: str, action: str, status: str, minutes_ago: int) -> SimpleNamespace:
        started = (now - timedelta(minutes=minutes_ago)).replace(tzinfo=None)
        return SimpleNamespace(tenant=tenant, action=action, status=status, started_at=started)

    rows = [
        row("acme", "edr.contain_host", "executed", 10),
        row("acme", "edr.contain_host", "started", 59),
        row("acme", "edr.contain_host", "executed", 61),
        row("acme", "edr.contain_host", "failed", 5),
        row("acme", "edr.contain_host", "already_done", 5),
        row("acme", "identity.suspend_user", "executed", 5),
        row("globex", "edr.contain_host", "executed", 5),
    ]
    count = count_recent_actions(
        rows, tenant="acme", action="edr.contain_host", window=timedelta(hours=1), now=now
    )
    assert count == 2


# Timeouts -------------------------------------------------------------------------------
def test_timeout_defaults_to_deny_and_actions_may_shorten_it() -> None:
    """Given a 20m default and 5m for contain_host,
    When suspend_user and contain_host need approval,
    Then their timeouts are 20m and 5m and both deny on timeout."""
    suspend = roe().decide(plan("identity.suspend_user", "jdoe"), incident())
    contain = roe().decide(plan(), incident(SeverityId.LOW))
    assert (suspend.timeout, contain.timeout) == (timedelta(minutes=20), timedelta(minutes=5))
    assert suspend.on_timeout == contain.on_timeout == "deny"


def test_a_non_containment_action_may_approve_on_timeout() -> None:
    """Given identity.reset_factors with on_timeout: approve,
    When it is decided as remediation,
    Then a timeout approves it."""
    decision = roe().decide(
        plan("identity.reset_factors", "jdoe", stage=Stage.REMEDIATE), incident()
    )
    assert decision.on_timeout == "approve"


def test_a_timeout_never_approves_a_plan_in_the_containment_stage() -> None:
    """Given identity.reset_factors with on_timeout: approve,
    When a plan uses it in the containment stage,
    Then a timeout denies it."""
    decision = roe().decide(plan("identity.reset_factors", "jdoe", stage=Stage.CONTAIN), incident())
    assert decision.on_timeout == "deny"


@pytest.mark.parametrize(
    "action",
    ["edr.contain_host", "identity.suspend_user", "identity.revoke_sessions", "firewall.block_ip"],
)
def test_approve_on_timeout_is_refused_for_containment_verbs(action: str) -> None:
    """Given a policy saying a containment verb is approved on timeout,
    When it is loaded,
    Then it is refused with unsafe-timeout on that line."""
    text = (
        "version: 1\napprovers: {cli: true, cli_users: ['*']}\n"
        f"actions:\n  {action}:\n    on_timeout: approve\n"
    )
    assert first_issue(text) == ("unsafe-timeout", 5, f"actions.{action}.on_timeout")


def test_approve_on_timeout_is_refused_as_the_default() -> None:
    """Given approval.on_timeout: approve,
    When the policy is loaded,
    Then it is refused, because the default also covers containment verbs."""
    code, line, _ = first_issue(POLICY.replace("  timeout: 20m\n", "  on_timeout: approve\n"))
    assert (code, line) == ("unsafe-timeout", 11)


def test_the_evaluator_refuses_unsafe_rules_built_without_the_loader() -> None:
    """Given rules validated directly with pydantic (bypassing the loader),
    When an evaluator is built from rules approving containment on timeout,
    Then it raises PolicyError unsafe-timeout."""
    rules = RulesFile.model_validate(
        {
            "version": 1,
            "approvers": {"cli": True, "cli_users": ["*"]},
            "actions": {"firewall.block_ip": {"on_timeout": "approve"}},
        }
    )
    with pytest.raises(PolicyError) as caught:
        RulesOfEngagement(rules)
    assert caught.value.code == PolicyErrorCode.UNSAFE_TIMEOUT


# Unknown actions, tenants ---------------------------------------------------------------
def test_an_unknown_action_needs_approval() -> None:
    """Given no rule for edr.unblock_hash,
    When a critical incident asks for it,
    Then one approval is required, saying there is no rule."""
    decision = roe().decide(plan("edr.unblock_hash", "a" * 64), incident(SeverityId.CRITICAL))
    assert decision.verdict is Verdict.APPROVAL
    assert decision.approvals_required == 1
    assert decision.because[-1] == "no rule for edr.unblock_hash"


def test_a_tenants_policy_never_authorises_another_tenants_plan() -> None:
    """Given acme's policy,
    When it is handed a plan of tenant globex,
    Then the plan is forbidden."""
    decision = roe().decide(plan("edr.block_hash", tenant="globex"), incident(tenant="globex"))
    assert decision.verdict is Verdict.FORBIDDEN


# Explanations ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("the_plan", "severity", "recent", "explanation"),
    [
        (
            plan(),
            SeverityId.CRITICAL,
            2,
            "contain_host WS-0042: unattended, because severity critical (unattended from "
            "critical) and within budget (2 of 5 per 1h)",
        ),
        (
            plan(),
            SeverityId.HIGH,
            0,
            "contain_host WS-0042: approval by 1 of @soc-leads, U0ALICE01, because severity "
            "high (unattended from critical)",
        ),
        (
            plan("edr.contain_host", "DC-01"),
            SeverityId.CRITICAL,
            0,
            "contain_host DC-01: forbidden, because severity critical (unattended from "
            "critical) and protected host pattern DC-*",
        ),
        (
            plan("edr.unblock_hash", "h1"),
            SeverityId.MEDIUM,
            0,
            "unblock_hash h1: approval by 1 of @soc-leads, U0ALICE01, because severity medium "
            "and no rule for edr.unblock_hash",
        ),
    ],
)
def test_explanations_read_as_sentences(
    the_plan: ActionPlan, severity: SeverityId, recent: int, explanation: str
) -> None:
    """Given the acme policy,
    When plans are decided,
    Then reason and explanation are the exact human sentence."""
    decision = roe().decide(the_plan, incident(severity), recent_actions=recent)
    assert decision.reason == decision.explanation == explanation


def test_the_design_example_explanation() -> None:
    """Given jdoe in group executives and suspend_user needing 2 of @soc-leads for them,
    When a high-severity incident asks to suspend jdoe,
    Then the explanation is word for word the one in the design brief."""
    text = """\
version: 1
approvers: {slack_group: S0SOCLEADS, slack_group_handle: soc-leads, cli: false}
groups: {executives: [jdoe]}
actions:
  identity.suspend_user:
    conditions: [{user_in_group: executives, approvals: 2}]
"""
    decision = roe(text).decide(plan("identity.suspend_user", "jdoe"), incident())
    assert decision.explanation == (
        "suspend_user jdoe: approval by 2 of @soc-leads, "
        "because severity high and user in group executives"
    )
    assert decision.approvals_required == 2


# Files ----------------------------------------------------------------------------------
def test_a_tenant_file_wins_and_others_fall_back_to_default(tmp_path: Path) -> None:
    """Given default.yaml and acme.yaml,
    When policies are looked up for acme and globex,
    Then acme gets its own file and globex the default."""
    (tmp_path / "acme.yaml").write_text(POLICY)
    (tmp_path / "default.yaml").write_text("version: 1\napprovers: {cli: true, cli_users: ['*']}\n")
    acme = policy_for_tenant(tmp_path, "acme")
    globex = policy_for_tenant(tmp_path, "globex")
    assert (acme.name, acme.source) == ("acme", str(tmp_path / "acme.yaml"))
    assert (globex.name, globex.source) == ("default", str(tmp_path / "default.yaml"))


def test_no_policy_at_all_is_an_error(tmp_path: Path) -> None:
    """Given an empty policies directory,
    When a tenant's policy is looked up,
    Then PolicyError no-policy names default.yaml."""
    with pytest.raises(PolicyError) as caught:
        policy_for_tenant(tmp_path, "acme")
    assert caught.value.code == "no-policy"
    assert caught.value.file == str(tmp_path / "default.yaml")


@pytest.mark.parametrize("tenant", ["../etc/passwd", "Acme", ""])
def test_a_tenant_id_cannot_name_another_file(tmp_path: Path, tenant: str) -> None:
    """Given a tenant id that is not a tenant id,
    When its policy is looked up,
    Then PolicyError bad-tenant is raised before any file is read."""
    with pytest.raises(PolicyError) as caught:
        policy_for_tenant(tmp_path, tenant)
    assert caught.value.code == "bad-tenant"


@pytest.mark.parametrize("name", ["default.yaml", "acme.yaml"])
def test_the_shipped_example_policies_are_valid(name: str) -> None:
    """Given the example policies in policies/,
    When they are loaded,
    Then they validate."""
    assert load_policy(REPO / "policies" / name).rules.version == 1


def _expected(path: Path) -> tuple[str, int]:
    lines = path.read_text().splitlines()
    marked = [n for n, text in enumerate(lines, start=1) if "# <- error" in text]
    assert len(marked) == 1, f"{path.name} must mark exactly one line with '# <- error'"
    return path.stem, marked[0]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_invalid_fixture_fails_with_its_code_on_the_marked_line(path: Path) -> None:
    """Given a fixture named after an error code with its bad line marked,
    When it is loaded,
    Then PolicyError has that code, that line and the file's name."""
    code, line = _expected(path)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert (caught.value.code, caught.value.line) == (code, line)
    assert caught.value.file == str(path)
    assert str(caught.value.issues[0]).startswith(f"{path}:{line}: {code}: ")


def test_every_file_error_code_has_a_fixture_and_documentation() -> None:
    """Given the error codes,
    When the fixtures and policies/README.md are listed,
    Then every code found in files has a fixture, and every code is documented."""
    fixtures = {p.stem for p in FIXTURES.glob("*.yaml")}
    readme = (REPO / "policies" / "README.md").read_text().partition("## Error codes")[2]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", readme, flags=re.MULTILINE))
    codes = {c.value for c in PolicyErrorCode}
    assert codes - {"no-policy", "bad-tenant"} == fixtures
    assert documented == codes


def test_every_problem_is_reported_in_file_order() -> None:
    """Given a file with a bad severity below a misspelled key,
    When it is loaded,
    Then both issues are reported, in line order, with their fields."""
    text = (
        "version: 1\napprovers: {cli: true, cli_users: ['*']}\n"
        "actions:\n  edr.block_hash: {unattended_from: x}\n"
    )
    text = text.replace("version: 1\n", "version: 1\nnotes: hi\n")
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    got = [(i.line, i.code, i.field) for i in caught.value.issues]
    assert got == [
        (2, "unknown-field", "notes"),
        (5, "bad-severity", "actions.edr.block_hash.unattended_from"),
    ]


def test_a_bare_address_protects_just_that_address() -> None:
    """Given 192.0.2.53 (no prefix length) protected,
    When .53 and .54 are to be blocked,
    Then only .53 is forbidden."""
    text = POLICY.replace('"2001:db8::/32"', '"192.0.2.53"')
    policy = roe(text)
    hit = policy.decide(plan("firewall.block_ip", "192.0.2.53"), incident())
    miss = policy.decide(plan("firewall.block_ip", "192.0.2.54"), incident())
    assert (hit.verdict, miss.verdict) == (Verdict.FORBIDDEN, Verdict.UNATTENDED)


def test_raised_stakes_turn_approve_on_timeout_into_deny() -> None:
    """Given reset_factors approved on timeout and protected users needing approval,
    When a protected account's factors are to be reset,
    Then approval by 2 is required and a timeout denies."""
    text = POLICY.replace("protected:\n", "protected:\n  on_match: approval\n")
    decision = roe(text).decide(
        plan("identity.reset_factors", "breakglass-1", stage=Stage.REMEDIATE), incident()
    )
    assert (decision.verdict, decision.approvals_required) == (Verdict.APPROVAL, 2)
    assert decision.on_timeout == "deny"
