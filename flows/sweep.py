"""The ``sweep`` flow: one pass of the work that falls due with time.

TTL expiry of containment (:mod:`flows.respond.expiry`) and, when approvals go through Slack,
the approval sweep (reminders, escalation, expiry at the deadline). Deployed on an
interval; ``stanch serve`` sweeps Slack approvals in its own process and serves this
flow every minute with ``approvals=False`` for the TTL expiry.
"""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.approval import slack_approval_service
from flows.record import open_store
from flows.respond import Expiry, expire_due
from flows.settings import load_settings


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


@flow(name="sweep", flow_run_name="sweep", log_prints=False)
async def sweep(approvals: bool = True) -> SweepSummary:
    """Run one pass: Slack approvals (when that is the channel), then TTL expiry.

    Args:
        approvals: also sweep pending Slack approvals; ``stanch serve``, which sweeps
            them every few seconds itself, runs this flow with ``False``.

    Raises:
        ConfigurationError: approvals go through Slack but its settings are incomplete.
    """
    settings = load_settings()
    logger = get_run_logger()
    async with open_store(settings.store_url) as store:
        swept: list[tuple[str, str]] = []
        if approvals and settings.approval_channel == "slack":
            swept = await slack_approval_service(store, settings).sweep()
        expired = await expire_due(store, settings)
    for expiry in expired:
        logger.info(
            "%s: %s %s %s (TTL ended %s)",
            expiry.incident_id,
            expiry.action,
            expiry.target_label,
            expiry.status.value,
            expiry.expired_at.isoformat(),
        )
    return SweepSummary(
        expired=expired,
        approvals=[SweptApproval(approval_id=a, done=d) for a, d in swept],
    )
