"""The end-of-incident Slack summary: in the incident's thread, inert, and never fatal.

A real store (SQLite), the real approval-posting path (``post_and_bind``) and the loopback
FakeSlack that ``slack_sdk`` talks to over HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk import WebClient

from flows.approval import new_approval_request, pending_row, post_and_bind
from flows.models import (
    ActionResult,
    ActionStatus,
    Incident,
    IncidentOutcome,
    Investigation,
    Stage,
    StageRecord,
    Verdict,
    utcnow,
)
from flows.record import Store, open_store, post_incident_summary, summary_view
from flows.settings import StanchSettings
from flows.wiring import slack_chat
from integrations.slack import MessageRef, SlackChat, incident_summary
from integrations.slack.fake import FakeSlack, iter_text
from tests.flows import factories

CHANNEL = "C0SOCAPPROVALS"
HOSTILE = "WS-0042 <!channel> <http://evil.example|click here> *bold* &lt;"
SIGNATURE = "f00dfacef00dfacef00dfacef00dfacef00dfacef00dfacef00dfacef00dface"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def chat(fake: FakeSlack) -> SlackChat:
    return SlackChat(
        WebClient(token=fake.token, base_url=fake.base_url, timeout=5), channel=CHANNEL
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as opened:
        yield opened


def outcome_of(incident: Incident, *, target_label: str = "WS-0042") -> IncidentOutcome:
    """A contained incident: one executed action approved in Slack, still in effect."""
    plan = factories.plan(incident_id=incident.id, target_label=target_label)
    now = utcnow()
    return IncidentOutcome(
        incident=incident,
        flow_run_id="run-1",
        investigation=Investigation(verdict="true_positive", risk_score=90),
        stages=[
            StageRecord(stage=Stage.CONTAIN, state="completed", started_at=now, finished_at=now),
            StageRecord(stage=Stage.REMEDIATE, state="failed", started_at=now, finished_at=now),
        ],
        actions=[
            ActionResult(
                plan=plan,
                plan_sha256=plan.sha256,
                verdict=Verdict.APPROVAL,
                status=ActionStatus.EXECUTED,
                approved_by=["slack:UALICE"],
            )
        ],
        # Things the summary must never carry: a decision's HMAC, ledger internals.
        decisions=[{"approval_id": "APR-1", "signature": SIGNATURE}],
        report_paths={"markdown": "reports/x.md", "html": "reports/x.html"},
        clocks={"detect": 3.0, "acknowledge": 61.0, "contain": 252.4, "resolve": None},
        in_effect=[f"edr.contain_host {target_label}"],
        ledger={"verified": True, "message": "ledger OK: 4 entries", "entries": [SIGNATURE]},
    )


async def ask_in_slack(
    store: Store, chat: SlackChat, incident: Incident, *, stage: str, minutes_ago: int
) -> MessageRef:
    """Store an approval request and post it to Slack the way the Slack gate does."""
    request = new_approval_request(
        incident_id=incident.id,
        tenant=incident.tenant,
        flow_run_id=None,
        # Plans of different stages hash differently, so the two requests differ.
        plans=[factories.plan(incident_id=incident.id, stage=Stage(stage))],
        reasons={},
        timeout_seconds=600,
        incident_title=incident.title,
    )
    row = pending_row(request)
    row.status = "approved"
    row.requested_at = utcnow() - timedelta(minutes=minutes_ago)
    await store.create_approval(row)
    return await post_and_bind(chat, store, request, {"user_ids": ["UALICE"], "group": None})


def posted_params(fake: FakeSlack) -> list[dict[str, Any]]:
    return [c.params for c in fake.calls_to("chat.postMessage")]


async def test_the_summary_is_a_reply_in_the_first_approval_messages_thread(
    fake: FakeSlack, chat: SlackChat, store: Store
) -> None:
    """Given an incident whose contain approval was posted first and remediate approval
    later (stored in the opposite order), and a summary chat configured for another channel
    When the summary is posted
    Then it is a reply in the first approval message's thread and channel (thread_ts equal
    to its ts), unfurling is off, and the blocks are the summary of this outcome."""
    incident = factories.incident(1)
    later = await ask_in_slack(store, chat, incident, stage="remediate", minutes_ago=1)
    first = await ask_in_slack(store, chat, incident, stage="contain", minutes_ago=5)
    other = SlackChat(chat.client, channel="C0ELSEWHERE")
    outcome = outcome_of(incident)

    ts = await post_incident_summary(outcome, store, other)

    assert ts is not None and ts not in (first.ts, later.ts)
    reply = fake.messages[(first.channel, ts)]
    assert reply["thread_ts"] == first.ts
    assert (reply["unfurl_links"], reply["unfurl_media"]) == (False, False)
    text, blocks = incident_summary(summary_view(outcome))
    assert (reply["text"], reply["blocks"]) == (text, blocks)
    assert not [k for k in fake.messages if k[0] == "C0ELSEWHERE"]


async def test_without_a_slack_approval_the_summary_starts_the_thread(
    fake: FakeSlack, chat: SlackChat, store: Store
) -> None:
    """Given an incident that never asked in Slack (another incident did)
    When the summary is posted
    Then it is a new root message (no thread_ts) in the configured channel, not a reply
    in the other incident's thread."""
    await ask_in_slack(store, chat, factories.incident(2), stage="contain", minutes_ago=1)
    incident = factories.incident(3)

    ts = await post_incident_summary(outcome_of(incident), store, chat)

    assert ts is not None
    root = fake.messages[(CHANNEL, ts)]
    assert "thread_ts" not in root
    assert posted_params(fake)[-1]["unfurl_links"] is False
    assert root["blocks"][1]["fields"][0]["text"] == f"*Incident*\n`{incident.id}`"


async def test_a_rerun_updates_the_one_summary_instead_of_posting_another(
    fake: FakeSlack, chat: SlackChat, store: Store
) -> None:
    """Given an incident whose summary was posted,
    When a re-run reaches the report again with another outcome,
    Then the same message is updated (chat.update, same ts) and nothing new is posted."""
    incident = factories.incident(4)
    first = await post_incident_summary(outcome_of(incident), store, chat)
    posts = len(posted_params(fake))

    again = await post_incident_summary(
        outcome_of(incident, target_label="WS-0042-rerun"), store, chat
    )

    assert again == first is not None
    assert len(posted_params(fake)) == posts
    [update] = [c.params for c in fake.calls_to("chat.update")]
    assert (update["channel"], update["ts"]) == (CHANNEL, first)
    assert "WS-0042-rerun" in json.dumps(fake.messages[(CHANNEL, first)]["blocks"])


async def test_hostile_alert_text_reaches_slack_only_as_text(
    fake: FakeSlack, chat: SlackChat, store: Store
) -> None:
    """Given an incident title and a target label full of <!channel>, a disguised link,
    *bold* and &lt;
    When the summary is posted
    Then what Slack received has them only in plain_text or escaped inside code spans:
    no mrkdwn or fallback text holds a < or > but the mention of the validated approver
    id, and no link or other mention sequence exists."""
    incident = factories.incident(4, title=HOSTILE)
    await post_incident_summary(outcome_of(incident, target_label=HOSTILE), store, chat)

    [params] = posted_params(fake)
    assert "<" not in params["text"] and ">" not in params["text"]
    plain = [o["text"] for k, o in iter_text(params["blocks"]) if k == "plain_text"]
    mrkdwn = [o["text"] for k, o in iter_text(params["blocks"]) if k == "mrkdwn"]
    assert plain == [f"Incident summary: {HOSTILE}"]
    assert any("&lt;!channel&gt;" in t for t in mrkdwn)
    for t in mrkdwn:
        t = t.replace("<@UALICE>", "")  # the approver, a validated Slack user id
        assert "<" not in t and ">" not in t, t
        outside = t.split("`")[::2]  # the parts not inside code spans
        assert not any("bold" in part or "click here" in part for part in outside), t


async def test_secrets_never_reach_slack(fake: FakeSlack, chat: SlackChat, store: Store) -> None:
    """Given an outcome whose decisions and ledger carry an HMAC, and a bot token
    When the summary is posted
    Then neither appears in anything sent to chat.postMessage (the token only authenticates)."""
    await post_incident_summary(outcome_of(factories.incident(5)), store, chat)

    [params] = posted_params(fake)
    sent = json.dumps(params)
    assert SIGNATURE not in sent
    assert fake.token not in sent


async def test_a_slack_refusal_returns_none_and_logs_without_the_token(
    fake: FakeSlack, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a bot token Slack does not accept
    When the summary is posted
    Then nothing is posted, None comes back instead of an exception, and the warning
    names Slack's error code but not the token."""
    token = "xoxb-revoked-0000-secret"
    bad = SlackChat(WebClient(token=token, base_url=fake.base_url, timeout=5), channel=CHANNEL)
    incident = factories.incident(6)

    with caplog.at_level(logging.WARNING, logger="stanch.slack_summary"):
        ts = await post_incident_summary(outcome_of(incident), store, bad)

    assert ts is None
    assert fake.messages == {}
    [record] = [r for r in caplog.records if r.name == "stanch.slack_summary"]
    message = record.getMessage()
    assert incident.id in message and "invalid_auth" in message
    assert token not in caplog.text and "revoked" not in caplog.text


async def test_an_unreachable_slack_returns_none_and_logs(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a Slack base URL where nothing listens any more
    When the summary is posted
    Then None comes back and the warning names the connection failure, not the token."""
    with FakeSlack() as gone:
        base_url, token = gone.base_url, gone.token
    client = WebClient(token=token, base_url=base_url, timeout=2, retry_handlers=[])
    incident = factories.incident(7)

    with caplog.at_level(logging.WARNING, logger="stanch.slack_summary"):
        ts = await post_incident_summary(
            outcome_of(incident), store, SlackChat(client, channel=CHANNEL)
        )

    assert ts is None
    assert f"Incident {incident.id}: Slack summary not posted: URLError" in caplog.text
    assert token not in caplog.text


def test_summary_view_takes_what_the_outcome_says() -> None:
    """Given an outcome with an approved executed action, clocks, reports, a verified
    ledger and a failed remediate stage
    When turned into summary values
    Then each comes across (HTML report preferred, severity by name, failed stage named)."""
    incident = factories.incident(8)
    outcome = outcome_of(incident)

    view = summary_view(outcome)

    assert (view.incident_id, view.tenant) == (incident.id, "demo")
    assert view.severity == incident.severity.name.lower()
    [action] = view.actions
    assert (action.action, action.target_label, action.status) == (
        "edr.contain_host",
        "WS-0042",
        "executed",
    )
    assert action.approvers == ["slack:UALICE"]
    assert action.sha256 == outcome.actions[0].plan_sha256
    assert (view.time_to_contain, view.time_to_acknowledge) == (252.4, 61.0)
    assert view.report_location == "reports/x.html"
    assert (view.ledger_verified, view.ledger_message) == (True, "ledger OK: 4 entries")
    assert view.failed_stages == ["remediate"]
    assert view.in_effect == ["edr.contain_host WS-0042"]
    unchecked = summary_view(outcome.model_copy(update={"ledger": {}, "report_paths": {}}))
    assert (unchecked.ledger_verified, unchecked.report_location) == (None, "")


@pytest.mark.parametrize(
    "overrides",
    [
        {"approval_channel": "cli", "slack_bot_token": "xoxb-t", "slack_channel": CHANNEL},
        {"approval_channel": "slack", "slack_channel": CHANNEL},
        {"approval_channel": "slack", "slack_bot_token": "xoxb-t"},
    ],
)
def test_no_chat_without_slack_configured(overrides: dict[str, Any]) -> None:
    """Given settings that do not choose Slack, or lack its bot token or channel
    When the summary chat is built
    Then there is none (the caller skips the summary)."""
    assert slack_chat(StanchSettings(**overrides)) is None


async def test_the_settings_chat_posts_to_the_configured_slack(
    fake: FakeSlack, store: Store
) -> None:
    """Given settings choosing Slack with the fake's token, base URL and a channel
    When the summary chat is built and a summary posted through it
    Then it lands in that channel, authenticated with that token."""
    settings = StanchSettings(
        approval_channel="slack",
        slack_bot_token=SecretStr(fake.token),
        slack_base_url=fake.base_url,
        slack_channel=CHANNEL,
    )
    chat = slack_chat(settings)
    assert chat is not None and chat.channel == CHANNEL

    ts = await post_incident_summary(outcome_of(factories.incident(9)), store, chat)

    assert ts is not None and (CHANNEL, ts) in fake.messages
