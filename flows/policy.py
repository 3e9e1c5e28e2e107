"""Rules of engagement: which plans run unattended, which need approval, which never run.

This is the embedded default: containment always needs a human, remediation that only
tightens (blocking a hash, expiring a password) runs unattended, and protected assets are
never touched automatically. The per-tenant YAML policy replaces it behind the same
:class:`Policy` protocol.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Protocol

from flows.models import ActionPlan, Incident, Verdict


@dataclass(frozen=True)
class PolicyDecision:
    """Policy's verdict on one plan, and why."""

    verdict: Verdict
    reason: str
    approvals_required: int = 0


class Policy(Protocol):
    """Decides how much authority a plan needs."""

    def decide(self, plan: ActionPlan, incident: Incident) -> PolicyDecision: ...


@dataclass(frozen=True)
class DefaultPolicy:
    """Containment needs one approval; tightening remediation is unattended.

    Attributes:
        unattended: actions that run without approval.
        protected: glob patterns of targets (hostnames, logins, IPs) never acted on.
    """

    unattended: frozenset[str] = frozenset({"edr.block_hash", "identity.expire_password"})
    protected: tuple[str, ...] = field(default=("DC-*", "*-dc-*", "breakglass*", "break-glass*"))

    def decide(self, plan: ActionPlan, incident: Incident) -> PolicyDecision:
        """Forbidden for protected targets, unattended for listed actions, else approval."""
        for pattern in self.protected:
            if fnmatch.fnmatchcase(plan.target_label.lower(), pattern.lower()):
                return PolicyDecision(
                    Verdict.FORBIDDEN, f"{plan.target_label} is a protected asset ({pattern})"
                )
        if plan.action in self.unattended:
            return PolicyDecision(Verdict.UNATTENDED, f"{plan.action} is pre-authorised")
        severity = incident.severity.name.lower()
        return PolicyDecision(
            Verdict.APPROVAL,
            f"{plan.action} needs an analyst's approval (severity {severity})",
            approvals_required=1,
        )
