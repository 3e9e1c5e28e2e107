"""Policy: each tenant's rules of engagement, and what they decide for a plan.

A tenant's ``policies/<tenant>.yaml`` (or ``default.yaml``) is parsed against its schema
(:class:`RulesFile`, errors with file, line and a stable code: :class:`PolicyError`),
loaded by :func:`policy_for_tenant`, and applied by :class:`RulesOfEngagement`: unattended,
approval by whom and how many, or forbidden, with the reasons (:class:`RoeDecision`); one
request's terms (who, how many, how long, what silence means) are :func:`approval_terms`.
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
from flows.policy.loader import load_policy, parse_policy, policy_for_tenant
from flows.policy.rules import RulesOfEngagement, count_recent_actions, format_duration
from flows.policy.schema import (
    ActionRule,
    ApprovalDefaults,
    Approvers,
    Budget,
    Condition,
    Protected,
    RulesFile,
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
    "TimeoutOutcome",
    "approval_terms",
    "count_recent_actions",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "policy_for_tenant",
]
