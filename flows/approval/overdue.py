"""The ``approval-overdue`` flow: tell a second channel which approvals still wait.

Run by the Prefect automation that ``prefect.yaml`` declares on stanch's events: when an
incident's ``stanch.approval.requested`` has no ``stanch.approval.decided`` within ten
minutes, this flow posts each of its pending requests to ``STANCH_SLACK_OVERDUE_CHANNEL``
(or the approval channel). It decides nothing; it only makes the wait visible.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prefect import flow
from prefect.logging import get_run_logger

from flows.errors import ConfigurationError
from flows.models import utcnow
from flows.record import open_store
from flows.settings import load_settings
from flows.wiring import slack_chat

_INCIDENT_ID = re.compile(r"^INC-\d{8}-\d{4,}$")


def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@flow(name="approval-overdue", flow_run_name="overdue {incident_id}", log_prints=False)
async def approval_overdue(incident_id: str) -> list[str]:
    """Post each still-pending approval of ``incident_id`` to the overdue channel.

    Args:
        incident_id: the incident, from the triggering event's resource.

    Returns:
        The ids of the approvals posted (none when they were decided meanwhile).

    Raises:
        ValueError: ``incident_id`` is not an incident id (the event was not stanch's).
        ConfigurationError: Slack is not configured.
    """
    # Anyone with Prefect API access can emit an event: take nothing from it on trust.
    if not _INCIDENT_ID.match(incident_id):
        raise ValueError(f"{incident_id!r} is not an incident id")
    settings = load_settings()
    chat = slack_chat(settings)
    if chat is None:
        raise ConfigurationError("approval-overdue needs STANCH_SLACK_BOT_TOKEN and a channel")
    channel = settings.slack_overdue_channel or chat.channel
    async with open_store(settings.store_url) as store:
        pending = await store.approvals(incident_id=incident_id, status="pending")
    posted: list[str] = []
    now = utcnow()
    for row in pending:
        asked = (
            row.requested_at.replace(tzinfo=now.tzinfo)
            if row.requested_at.tzinfo is None
            else row.requested_at
        )
        waited = int((now - asked).total_seconds() // 60)
        await chat.apost_notice(
            f"Approval {row.id} for {incident_id} has waited {waited} min for a decision "
            f"(deadline {row.deadline:%Y-%m-%d %H:%M} UTC). Decide it in the approval "
            f"channel or with `stanch approve {row.id}` / `stanch deny {row.id}`.",
            channel=channel,
        )
        posted.append(row.id)
    get_run_logger().info("%s: %d approval(s) still waiting posted", incident_id, len(posted))
    return posted
