"""The ``sweep`` flow: one pass of the work that falls due with time.

TTL expiry of containment (:mod:`flows.respond.expiry`); the cases' SLA warnings and
breaches and the policy's auto-close of idle low-score incidents; and, when approvals go
through Slack, the approval sweep (reminders, escalation, expiry at the deadline).
Deployed on an interval; ``stanch serve`` sweeps Slack approvals in its own process and
serves this flow every minute with ``approvals=False``.
"""

# No ``from __future__ import annotations``: a served run loads this flow in a process of
# its own, where Prefect validates the parameters against their real types; the string
# "datetime | None" does not resolve there and every scheduled sweep failed.
from datetime import datetime

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.approval import slack_approval_service
from flows.models import utcnow
from flows.policy import RulesFile, policy_for_tenant
from flows.record import SlaNotice, auto_close_idle, open_store, sweep_slas
from flows.respond import Expiry, expire_due
from flows.settings import load_settings, policy_directory
from flows.wiring import slack_chat


class SweptApproval(BaseModel):
    """One pending Slack approval the sweep acted on."""

    model_config = ConfigDict(frozen=True)

    approval_id: str
    done: str = Field(description="expired, escalated, reminded ...")


class SweepSummary(BaseModel):
    """What one pass did: the expiries it ran and the approvals it swept."""

    model_config = ConfigDict(frozen=True)

    expired: list[Expiry] = Field(default_factory=list)
    approvals: list[SweptApproval] = Field(default_factory=list)
    sla: list[SlaNotice] = Field(default_factory=list)
    auto_closed: list[str] = Field(default_factory=list)


@flow(name="sweep", flow_run_name="sweep", log_prints=False)
async def sweep(
    approvals: bool = True, cases: bool = True, now: datetime | None = None
) -> SweepSummary:
    """Run one pass: Slack approvals (when that is the channel), TTL expiry, then cases.

    Args:
        approvals: also sweep pending Slack approvals; ``stanch serve``, which sweeps
            them every few seconds itself, runs this flow with ``False``.
        cases: warn before SLA deadlines, record breaches, auto-close what the tenants'
            policies allow.
        now: the time SLAs and auto-close are judged by (default: the current time).

    Raises:
        ConfigurationError: approvals go through Slack but its settings are incomplete.
    """
    settings = load_settings()
    logger = get_run_logger()
    policies = policy_directory(settings.policies_dir)
    rules: dict[str, RulesFile] = {}

    def rules_for(tenant: str) -> RulesFile:
        if tenant not in rules:
            rules[tenant] = policy_for_tenant(policies, tenant).rules
        return rules[tenant]

    notices: list[SlaNotice] = []
    closed: list[str] = []
    async with open_store(settings.store_url) as store:
        swept: list[tuple[str, str]] = []
        if approvals and settings.approval_channel == "slack":
            swept = await slack_approval_service(store, settings).sweep()
        expired = await expire_due(store, settings)
        if cases:
            at = now or utcnow()
            closed = await auto_close_idle(store, rules_for, now=at)
            notices = await sweep_slas(store, rules_for, slack_chat(settings), now=at)
    for expiry in expired:
        logger.info(
            "%s: %s %s %s (TTL ended %s)",
            expiry.incident_id,
            expiry.action,
            expiry.target_label,
            expiry.status.value,
            expiry.expired_at.isoformat(),
        )
    for notice in notices:
        logger.warning(
            "%s: SLA %s of %s (deadline %s)",
            notice.incident_id,
            notice.kind,
            notice.clock,
            notice.deadline.isoformat(),
        )
    return SweepSummary(
        expired=expired,
        approvals=[SweptApproval(approval_id=a, done=d) for a, d in swept],
        sla=notices,
        auto_closed=closed,
    )
