"""The ``sweep`` flow: one pass of the work that falls due with time.

TTL expiry of containment (:mod:`flows.expiry`) and, when approvals go through Slack,
the approval sweep (reminders, escalation, expiry at the deadline). Deployed on an
interval; ``stanch serve`` sweeps Slack approvals in its own process and serves this
flow every minute with ``approvals=False`` for the TTL expiry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.errors import ConfigurationError
from flows.expiry import Expiry, expire_due
from flows.settings import StanchSettings, load_settings
from flows.store import Store, open_store

if TYPE_CHECKING:
    from flows.approval_service import ApprovalService


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


def slack_approval_service(store: Store, settings: StanchSettings) -> ApprovalService:
    """The Slack approval service the settings describe (bot token, channel, workspace,
    escalation group and timings), as ``stanch serve`` runs it.

    Raises:
        ConfigurationError: a setting the service needs is missing (named).
    """
    from slack_sdk import WebClient

    from flows.approval_service import ApprovalService
    from integrations.slack import SlackChat

    token, channel, team = settings.slack_bot_token, settings.slack_channel, settings.slack_team_id
    if token is None or channel is None or team is None:
        named = {
            "STANCH_SLACK_BOT_TOKEN": token,
            "STANCH_SLACK_CHANNEL": channel,
            "STANCH_SLACK_TEAM_ID": team,
        }
        missing = ", ".join(name for name, value in named.items() if value is None)
        raise ConfigurationError(f"Slack approvals need {missing}")
    client = WebClient(token=token.get_secret_value(), base_url=settings.slack_base_url, timeout=10)
    return ApprovalService(
        store,
        SlackChat(client, channel=channel),
        settings.approval_key(),
        team_id=team,
        escalation_group=settings.slack_escalation_group,
        reminder_every=timedelta(seconds=settings.slack_reminder_seconds),
        escalate_after=timedelta(seconds=settings.slack_escalate_after_seconds),
    )


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


__all__ = ["SweepSummary", "SweptApproval", "slack_approval_service", "sweep"]
