"""The end-of-incident Slack summary, posted as a reply in the incident's thread.

The incident's thread is the one under its first Slack approval message; an incident that
never asked in Slack gets a new message in the approval channel, which becomes its thread.
Posting is best effort: a Slack or network failure is logged and never fails the incident.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from slack_sdk.errors import SlackApiError, SlackClientError

from flows.models import IncidentOutcome
from flows.record.case_views import read_case
from flows.record.store import Store
from integrations.errors import IntegrationError
from integrations.slack import (
    MessageRef,
    SlackChat,
    SummaryAction,
    SummaryView,
    case_summary,
    classify,
)

log = logging.getLogger("stanch.slack_summary")


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    # Inside a flow or task the warning belongs in the run's logs; outside one (the CLI,
    # tests) Prefect has no run logger to give.
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def summary_view(outcome: IncidentOutcome) -> SummaryView:
    """The plain values the summary shows; the Slack builder escapes the alert-derived ones."""
    incident = outcome.incident
    ledger = outcome.ledger
    report = outcome.report_paths.get("html") or outcome.report_paths.get("markdown") or ""
    return SummaryView(
        incident_id=incident.id,
        incident_title=incident.title,
        severity=incident.severity.name.lower(),
        tenant=incident.tenant,
        actions=[
            SummaryAction(
                action=a.plan.action,
                target_label=a.plan.target_label or a.plan.target,
                status=a.status.value,
                approvers=list(a.approved_by),
                sha256=a.plan_sha256,
            )
            for a in outcome.actions
        ],
        in_effect=list(outcome.in_effect),
        time_to_contain=outcome.clocks.get("contain"),
        time_to_acknowledge=outcome.clocks.get("acknowledge"),
        report_location=report,
        report_url=outcome.report_paths.get("prefect", ""),
        ledger_verified=bool(ledger["verified"]) if "verified" in ledger else None,
        ledger_message=str(ledger.get("message", "")),
        failed_stages=[s.stage.value for s in outcome.stages if s.state == "failed"],
        case_status=outcome.case_status or "",
    )


async def incident_thread(store: Store, incident_id: str) -> MessageRef | None:
    """Where the incident's first Slack approval message is, or ``None`` if it has none."""
    # store.approvals() lists newest first; the thread root is the oldest message.
    rows = sorted(await store.approvals(incident_id=incident_id), key=lambda r: r.requested_at)
    for row in rows:
        binding = await store.slack_approval(row.id)
        if binding is not None:
            return MessageRef(channel=binding.channel, ts=binding.ts)
    return None


async def post_incident_summary(
    outcome: IncidentOutcome, store: Store, chat: SlackChat
) -> str | None:
    """Post the incident's summary in its Slack thread.

    Slack API: ``chat.postMessage`` with ``thread_ts`` (the first approval message's ``ts``)
    when the incident asked for approval in Slack; otherwise without, in ``chat.channel``,
    so the summary starts the incident's thread. Unfurling is off. An incident whose
    summary was posted before (a re-run) gets that message updated (``chat.update``), so
    it has one summary, and it is current. Its view is kept, so a case change (Slack,
    the CLI, the API) can redraw it with the case's status.

    Returns:
        The posted message's ``ts``, or ``None`` when Slack refused or could not be
        reached (logged; the incident is not failed for it).
    """
    incident_id = outcome.incident.id
    view = summary_view(outcome)
    text, blocks = case_summary(view)
    earlier = await store.incident_summary(incident_id)
    if earlier is not None:
        # A re-run reached the report again: the one summary is brought up to date.
        method = "chat.update"
        channel = earlier.channel
        call = partial(
            chat.client.chat_update, channel=channel, ts=earlier.ts, text=text, blocks=blocks
        )
    else:
        method = "chat.postMessage"
        thread = await incident_thread(store, incident_id)
        channel = thread.channel if thread else chat.channel
        call = partial(
            chat.client.chat_postMessage,
            channel=channel,
            # slack_sdk drops None arguments: no thread_ts makes a new root message.
            thread_ts=thread.ts if thread else None,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
        )
    try:
        response = await asyncio.to_thread(call)
    except SlackApiError as exc:
        # classify() keeps the status and Slack's error code, nothing from the request.
        error = classify(exc, method=method)
        _logger().warning("Incident %s: Slack summary not posted: %s", incident_id, error)
        return None
    except (SlackClientError, OSError) as exc:  # urllib: refused, reset, timed out
        _logger().warning(
            "Incident %s: Slack summary not posted: %s", incident_id, type(exc).__name__
        )
        return None
    ts = str(response["ts"])
    await store.record_incident_summary(incident_id, channel, ts, view.model_dump(mode="json"))
    return ts


async def redraw_summary(store: Store, chat: SlackChat, incident_id: str) -> bool:
    """Redraw the incident's Slack summary with its case's current status and assignee.

    Slack API: ``chat.update`` of the stored summary message. Best effort: ``False`` when
    there is no summary (or none whose view was kept) or Slack refused; logged.
    """
    earlier = await store.incident_summary(incident_id)
    if earlier is None or earlier.view is None:
        return False
    case = await read_case(store.engine, incident_id)
    view = SummaryView.model_validate(
        {**earlier.view, "case_status": case.status, "assignee": case.assignee or ""}
    )
    text, blocks = case_summary(view)
    try:
        await chat.aupdate_message(earlier.channel, earlier.ts, text, blocks)
    except IntegrationError as exc:
        _logger().warning("Incident %s: Slack summary not redrawn: %s", incident_id, exc)
        return False
    await store.record_incident_summary(
        incident_id, earlier.channel, earlier.ts, view.model_dump(mode="json")
    )
    return True
