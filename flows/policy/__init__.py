"""Policy: each tenant's rules of engagement, and what they decide for a plan.

A tenant's ``policies/<tenant>.yaml`` (or ``default.yaml``) is parsed against its schema
(:class:`RulesFile`, errors with file, line and a stable code: :class:`PolicyError`),
loaded by :func:`policy_for_tenant`, and applied by :class:`RulesOfEngagement`: unattended,
approval by whom and how many, or forbidden, with the reasons (:class:`RoeDecision`); and
what the tenant's cases must meet (:class:`Sla`) and may close unattended
(:class:`AutoCloseRule`); one request's terms (who, how many, how long, what silence means)
are :func:`approval_terms`.
"""

from __future__ import annotations

from flows.policy.decision import Policy, PolicyDecision, RoeDecision
from flows.policy.errors import PolicyError, PolicyErrorCode, PolicyIssue
from flows.policy.fields import (
    CONTAINMENT_ACTIONS,
    KNOWN_ACTIONS,
    ActionCounter,
    TimeoutOutcome,
    parse_duration,
)
from flows.policy.loader import (
    fail_safe_policy,
    load_policy,
    parse_policy,
    policy_for_tenant,
    policy_or_fail_safe,
)
from flows.policy.rules import RulesOfEngagement, count_recent_actions, format_duration
from flows.policy.schema import (
    ActionRule,
    ApprovalDefaults,
    Approvers,
    AutoCloseRule,
    Budget,
    Condition,
    Protected,
    RulesFile,
    Sla,
    SlaTargets,
)
from flows.policy.terms import ApprovalTerms, approval_terms

__all__ = [
    "CONTAINMENT_ACTIONS",
    "KNOWN_ACTIONS",
    "ActionCounter",
    "ActionRule",
    "ApprovalDefaults",
    "ApprovalTerms",
    "Approvers",
    "AutoCloseRule",
    "Budget",
    "Condition",
    "Policy",
    "PolicyDecision",
    "PolicyError",
    "PolicyErrorCode",
    "PolicyIssue",
    "Protected",
    "RoeDecision",
    "RulesFile",
    "RulesOfEngagement",
    "Sla",
    "SlaTargets",
    "TimeoutOutcome",
    "approval_terms",
    "count_recent_actions",
    "fail_safe_policy",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "policy_for_tenant",
    "policy_or_fail_safe",
]
