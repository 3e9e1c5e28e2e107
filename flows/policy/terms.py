"""What one approval request asks for: the strictest terms of the decisions it covers.

``stanch policy check`` explains a decision with :func:`approval_terms` and the flow builds
every approval request with it, so what a SOC lead is told is what the flow asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from flows.policy.decision import RoeDecision
from flows.policy.fields import CONTAINMENT_ACTIONS, TimeoutOutcome
from flows.policy.rules import format_duration

DEFAULT_TIMEOUT = timedelta(minutes=15)
"""The wait when no decision names one (the schema's ``approval.timeout`` default)."""


@dataclass(frozen=True)
class ApprovalTerms:
    """Who must approve, how many, through which channels, by when, and what silence means.

    Attributes:
        required_approvals: distinct approvers needed (the highest any plan needs).
        approver_ids: Slack user ids the policy lets approve.
        approver_group: the Slack user group whose members may approve.
        channels: the channels every plan allows (``slack``, ``cli``, ``prefect-ui``).
        cli_users: the operator patterns whose CLI decisions count.
        timeout: how long to wait (the shortest any plan allows).
        on_timeout: ``approve`` only when every plan's policy says so and none is
            containment; otherwise ``deny``.
        approvers: the approvers as explanations name them (``@soc-leads, U0ACMELEAD1``).
        policy_timeout: the policy's own timeout, before any cap.
    """

    required_approvals: int
    approver_ids: tuple[str, ...]
    approver_group: str | None
    channels: tuple[str, ...]
    cli_users: tuple[str, ...]
    timeout: timedelta
    on_timeout: TimeoutOutcome
    approvers: str
    policy_timeout: timedelta

    @property
    def explained(self) -> str:
        """``15m, then deny``, as ``stanch policy check`` prints it (and any cap)."""
        text = f"{format_duration(self.timeout)}, then {self.on_timeout}"
        if self.timeout != self.policy_timeout:
            text += (
                f" (the policy's {format_duration(self.policy_timeout)}, "
                "capped by STANCH_APPROVAL_TIMEOUT_SECONDS)"
            )
        return text


def approval_terms(
    decisions: Sequence[RoeDecision], *, longest: timedelta | None = None
) -> ApprovalTerms:
    """The terms of one request covering ``decisions`` (one per plan, one tenant's policy).

    The strictest wins everywhere: the highest approver count, the channels all allow,
    the shortest timeout, and ``deny`` on timeout unless every plan allows ``approve``
    (never for a containment verb, whatever a decision says).

    Args:
        decisions: policy's decisions on the plans, each needing approval.
        longest: a cap on the timeout (``STANCH_APPROVAL_TIMEOUT_SECONDS``), if set.

    Raises:
        ValueError: ``decisions`` is empty.
    """
    if not decisions:
        raise ValueError("approval terms need at least one decision")
    ids: list[str] = []
    groups: list[str] = []
    descriptions: list[str] = []
    for d in decisions:
        ids.extend(u for u in d.approvers.slack_users if u not in ids)
        if d.approvers.slack_group and d.approvers.slack_group not in groups:
            groups.append(d.approvers.slack_group)
        if d.approvers.describe() not in descriptions:
            descriptions.append(d.approvers.describe())
    channels = [c for c in decisions[0].approvers.channels]
    for d in decisions[1:]:
        channels = [c for c in channels if c in d.approvers.channels]
    cli_users = tuple(
        dict.fromkeys(p for d in decisions if "cli" in channels for p in d.approvers.cli_users)
    )
    policy_timeout = min((d.timeout for d in decisions), default=DEFAULT_TIMEOUT)
    silent_yes = all(
        d.on_timeout == "approve" and d.action not in CONTAINMENT_ACTIONS for d in decisions
    )
    return ApprovalTerms(
        required_approvals=max([1, *(d.approvals_required for d in decisions)]),
        approver_ids=tuple(ids),
        approver_group=groups[0] if groups else None,
        channels=tuple(channels),
        cli_users=cli_users,
        timeout=min(policy_timeout, longest) if longest else policy_timeout,
        policy_timeout=policy_timeout,
        on_timeout="approve" if silent_yes else "deny",
        approvers="; ".join(descriptions),
    )
