"""The policy seam: how the lifecycle asks whether a plan may run, and what it is told.

The rules themselves are per-tenant YAML (``policies/``), found and loaded by
:mod:`flows.policy.loader` and applied by :mod:`flows.policy.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from flows.models import ActionPlan, Incident, Verdict
from flows.policy.fields import TimeoutOutcome
from flows.policy.schema import Approvers


@dataclass(frozen=True)
class PolicyDecision:
    """Policy's verdict on one plan, and why."""

    verdict: Verdict
    reason: str
    approvals_required: int = 0


class Policy(Protocol):
    """Decides how much authority a plan needs."""

    def decide(self, plan: ActionPlan, incident: Incident) -> PolicyDecision: ...


@dataclass(frozen=True, kw_only=True)
class RoeDecision(PolicyDecision):
    """A :class:`PolicyDecision` with everything the approval step needs.

    ``reason`` holds the human explanation, e.g. ``suspend_user jdoe: approval by 2 of
    @soc-leads, because severity high and user in group executives``.

    Attributes:
        action: ``<capability>.<verb>``.
        target: what a human recognises the target as.
        approvers: who may approve, and through which channels.
        timeout: how long to wait for approvers.
        on_timeout: what silence means (``deny`` for every containment verb).
        because: the explanation's reasons, in order.
        policy: which policy decided (tenant or file stem).
    """

    action: str
    target: str
    approvers: Approvers
    timeout: timedelta
    on_timeout: TimeoutOutcome = "deny"
    because: tuple[str, ...] = ()
    policy: str = ""

    @property
    def explanation(self) -> str:
        """The one-line human explanation (same as ``reason``)."""
        return self.reason
