"""SlackChat and Authoriser through real slack_sdk calls against FakeSlack."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.http_retry import RateLimitErrorRetryHandler

from integrations.errors import AuthError, NotFoundError, RateLimited
from integrations.slack.approval_message import FinalState
from integrations.slack.chat import Authoriser, SlackChat
from integrations.slack.fake import (
    TEAM_ID,
    FakeSlack,
    block_actions_payload,
    signed_interaction,
)
from integrations.slack.interactions import ensure_same_message, parse_interaction
from integrations.slack.signing import SlackRequestVerifier
from tests.integrations.slack.factories import CHANNEL, HOSTILE, view
from tests.integrations.slack.shapes import assert_documented_blocks, assert_documented_view


def test_post_then_update_removes_buttons_and_names_the_decider(
    chat: SlackChat, fake: FakeSlack
) -> None:
    """Given an approval posted to the channel
    When it is marked approved by U0ALICE
    Then chat.postMessage carried the buttons with unfurling off and no parse/link_names,
    and after chat.update the message has no actions block and names <@U0ALICE>."""
    v = view()
    ref = chat.post_approval(v)

    posted = fake.calls_to("chat.postMessage")[0]
    assert posted.params["channel"] == CHANNEL
    assert posted.params["unfurl_links"] is False and posted.params["unfurl_media"] is False
    assert "parse" not in posted.params and "link_names" not in posted.params
    assert posted.content_type.startswith("application/json")
    before = fake.messages[(ref.channel, ref.ts)]
    assert "actions" in [b["type"] for b in before["blocks"]]

    chat.mark_decided(
        ref.channel,
        ref.ts,
        v,
        FinalState(status="approved", by=["U0ALICE"], at=datetime(2025, 3, 1, 12, 40, tzinfo=UTC)),
    )

    update = fake.calls_to("chat.update")[0]
    assert (update.params["channel"], update.params["ts"]) == (ref.channel, ref.ts)
    after = fake.messages[(ref.channel, ref.ts)]
    assert all(b["type"] != "actions" for b in after["blocks"])
    assert "Approved* by <@U0ALICE> at 2025-03-01 12:40 UTC" in after["blocks"][-1]["text"]["text"]
    assert_documented_blocks(after["blocks"])


def test_rate_limited_once_then_retried_after_retry_after(chat: SlackChat, fake: FakeSlack) -> None:
    """Given Slack answers the next call with HTTP 429 and Retry-After: 1
    When an approval is posted
    Then the client waits at least a second, retries once, and the post succeeds."""
    fake.rate_limit(1, retry_after=1)
    started = time.monotonic()

    ref = chat.post_approval(view())

    assert time.monotonic() - started >= 1.0
    assert len(fake.calls_to("chat.postMessage")) == 2
    assert (ref.channel, ref.ts) in fake.messages


def test_rate_limit_that_outlasts_the_retries_is_a_typed_error(
    chat: SlackChat, fake: FakeSlack
) -> None:
    """Given Slack keeps answering 429
    When an approval is posted
    Then after one call and two retries RateLimited carries Retry-After, and nothing posted."""
    fake.rate_limit(5, retry_after=0)

    with pytest.raises(RateLimited) as caught:
        chat.post_approval(view())

    assert caught.value.retry_after == 0
    assert caught.value.vendor == "slack"
    assert len(fake.calls_to("chat.postMessage")) == 3
    assert fake.messages == {}


def test_the_retry_handler_is_added_once(client: WebClient) -> None:
    """Given a client wrapped twice
    When the handlers are counted
    Then there is exactly one RateLimitErrorRetryHandler, retrying twice."""
    SlackChat(client, channel=CHANNEL)
    SlackChat(client, channel=CHANNEL)
    handlers = [h for h in client.retry_handlers if isinstance(h, RateLimitErrorRetryHandler)]
    assert len(handlers) == 1
    assert handlers[0].max_retry_count == 2


def test_bad_token_is_an_auth_error_without_the_token(fake: FakeSlack) -> None:
    """Given a client with the wrong bot token
    When it posts
    Then AuthError with Slack's invalid_auth code, and the token is not in the message."""
    token = "xoxb-wrong-token-123"
    chat = SlackChat(WebClient(token=token, base_url=fake.base_url), channel=CHANNEL)

    with pytest.raises(AuthError) as caught:
        chat.post_approval(view())

    assert caught.value.vendor_code == "invalid_auth"
    assert token not in str(caught.value)


def test_updating_an_unknown_message_is_not_found(chat: SlackChat) -> None:
    """Given no message at that ts
    When marking it decided
    Then NotFoundError (Slack's message_not_found)."""
    state = FinalState(status="expired", at=datetime.now(UTC))
    with pytest.raises(NotFoundError) as caught:
        chat.mark_decided(CHANNEL, "1.000000", view(), state)
    assert caught.value.vendor_code == "message_not_found"


def test_ephemeral_refusal_goes_only_to_the_clicker(chat: SlackChat, fake: FakeSlack) -> None:
    """Given a refused clicker U0MALLORY
    When told why through chat.postEphemeral
    Then exactly one ephemeral goes to U0MALLORY, escaped, and nothing is posted to the
    channel for everyone."""
    fake.add_user("U0MALLORY")

    chat.tell_user("not an approver <!channel>", channel=CHANNEL, user="U0MALLORY")

    assert fake.ephemerals == [
        {"channel": CHANNEL, "user": "U0MALLORY", "text": "not an approver &lt;!channel&gt;"}
    ]
    assert fake.messages == {}


def test_refusal_through_response_url_is_ephemeral(chat: SlackChat, fake: FakeSlack) -> None:
    """Given the click's response_url
    When the clicker is told why
    Then the reply is response_type ephemeral and does not replace the original message."""
    url = fake.response_url()

    chat.tell_user("already decided", response_url=url)

    assert fake.responses == [
        {
            "url": url,
            "response_type": "ephemeral",
            "replace_original": False,
            "text": "already decided",
        }
    ]


def test_response_url_elsewhere_is_refused_before_any_request(
    chat: SlackChat, fake: FakeSlack
) -> None:
    """Given a response_url pointing outside Slack (or the fake)
    When used
    Then ValueError, and no request is made."""
    with pytest.raises(ValueError, match="response_url"):
        chat.tell_user("x", response_url="http://169.254.169.254/latest/meta-data")
    with pytest.raises(ValueError, match="channel and a user"):
        chat.tell_user("x", channel=CHANNEL)
    assert fake.calls == []


def test_deny_modal_opens_with_the_approval_id(chat: SlackChat, fake: FakeSlack) -> None:
    """Given a Deny click's trigger_id
    When the deny modal is opened
    Then views.open got that trigger_id and a documented modal carrying the approval id."""
    view_id = chat.open_deny_modal("123.456.abc", "APR-0123456789", "INC-20250301-0007")

    assert view_id.startswith("V")
    [opened] = fake.views
    assert opened["trigger_id"] == "123.456.abc"
    assert opened["view"]["callback_id"] == "stanch_deny_reason"
    assert opened["view"]["private_metadata"] == "APR-0123456789"
    assert_documented_view(opened["view"])


def test_thread_summary_is_a_threaded_escaped_reply(chat: SlackChat, fake: FakeSlack) -> None:
    """Given a posted approval
    When a summary is posted to its thread
    Then it is a reply with thread_ts = the approval's ts, escaped, unfurling off."""
    ref = chat.post_approval(view())

    reply_ts = chat.post_thread_summary(ref.channel, ref.ts, f"contained {HOSTILE}")

    reply = fake.messages[(ref.channel, reply_ts)]
    assert reply["thread_ts"] == ref.ts
    assert "<" not in reply["text"]
    assert reply["unfurl_links"] is False


async def test_async_wrappers_reach_slack(chat: SlackChat, fake: FakeSlack) -> None:
    """Given an event loop
    When the a-prefixed methods are awaited
    Then they make the same calls (in worker threads)."""
    fake.add_user("U0ALICE")
    fake.add_usergroup("S0SOC", ["U0ALICE"])

    ref = await chat.apost_approval(view())
    await chat.amark_decided(
        ref.channel,
        ref.ts,
        view(),
        FinalState(status="denied", by=["U0ALICE"], at=datetime.now(UTC)),
    )
    await chat.atell_user("no", channel=CHANNEL, user="U0ALICE")
    await chat.aopen_deny_modal("1.2.3", "APR-1")
    assert await chat.aapprover_ids("S0SOC") == frozenset({"U0ALICE"})
    assert (await chat.auser_facts("U0ALICE")).id == "U0ALICE"
    await chat.apost_thread_summary(ref.channel, ref.ts, "done")

    methods = [c.method for c in fake.calls]
    assert methods == [
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "views.open",
        "usergroups.users.list",
        "users.info",
        "chat.postMessage",
    ]


# Authoriser ------------------------------------------------------------------------------


@pytest.fixture
def seeded(fake: FakeSlack) -> FakeSlack:
    fake.add_user("U0ALICE", "alice")
    fake.add_user("U0BOB", "bob")
    fake.add_user("U0GONE", deleted=True)
    fake.add_user("U0BOT", is_bot=True)
    fake.add_user("U0GUEST", is_restricted=True)
    fake.add_user("U0SINGLE", is_ultra_restricted=True)
    fake.add_user("U0OUTSIDER", team_id="T0PARTNER")
    fake.add_user("U0RANDOM")
    fake.add_usergroup("S0SOC", ["U0ALICE", "U0GONE", "U0BOT", "U0GUEST", "U0SINGLE", "U0OUTSIDER"])
    return fake


@pytest.mark.parametrize(
    ("user_id", "allowed", "reason"),
    [
        ("U0ALICE", True, "member of the approver group"),
        ("U0BOB", True, "on the approver list"),
        ("U0GONE", False, "deactivated"),
        ("U0BOT", False, "bots"),
        ("U0GUEST", False, "guest"),
        ("U0SINGLE", False, "guest"),
        ("U0OUTSIDER", False, "another workspace"),
        ("U0RANDOM", False, "not an approver"),
        ("U0NOBODY", False, "unknown Slack user"),
    ],
)
def test_authoriser(
    chat: SlackChat, seeded: FakeSlack, user_id: str, allowed: bool, reason: str
) -> None:
    """Given an allow-list (U0BOB) and a group whose members include deleted, bot, guest and
    foreign accounts
    When each user is checked
    Then only live, human, full members of our workspace on the list or in the group pass."""
    authoriser = Authoriser(chat, user_ids=["U0BOB"], usergroup_id="S0SOC", team_id=TEAM_ID)

    verdict = authoriser.check(user_id)

    assert verdict.allowed is allowed
    assert reason in verdict.reason


def test_authoriser_with_no_approvers_refuses_everyone(chat: SlackChat, seeded: FakeSlack) -> None:
    """Given neither an allow-list nor a group
    When a full member is checked
    Then refused without asking Slack (fail closed)."""
    verdict = Authoriser(chat).check("U0ALICE")
    assert verdict == (False, "no approvers are configured")
    assert seeded.calls == []


def test_group_membership_is_cached_for_its_ttl(chat: SlackChat, seeded: FakeSlack) -> None:
    """Given a 60 s membership cache and a controllable clock
    When checking twice within a minute, then after it
    Then usergroups.users.list is called once, then again, and a removal is seen."""
    now = [0.0]
    authoriser = Authoriser(chat, usergroup_id="S0SOC", cache_seconds=60, clock=lambda: now[0])

    assert authoriser.check("U0ALICE").allowed
    seeded.add_usergroup("S0SOC", [])
    now[0] = 30.0
    assert authoriser.check("U0ALICE").allowed
    assert len(seeded.calls_to("usergroups.users.list")) == 1
    now[0] = 61.0
    assert not authoriser.check("U0ALICE").allowed
    assert len(seeded.calls_to("usergroups.users.list")) == 2


async def test_acheck(chat: SlackChat, seeded: FakeSlack) -> None:
    """Given a group member
    When checked asynchronously
    Then allowed."""
    assert (await Authoriser(chat, usergroup_id="S0SOC").acheck("U0ALICE")).allowed


# the whole click -------------------------------------------------------------------------


def test_signed_click_to_updated_message(chat: SlackChat, seeded: FakeSlack) -> None:
    """Given a posted approval and a signed click from a group member on that message
    When the click is verified, parsed, bound to the message, authorised and applied
    Then the message loses its buttons and names the clicker; a non-member's click on the
    same message is refused with an ephemeral to that user only."""
    v = view()
    ref = chat.post_approval(v)
    verifier = SlackRequestVerifier(SecretStr("signing"), clock=lambda: 1_700_000_000)
    authoriser = Authoriser(chat, usergroup_id="S0SOC", team_id=TEAM_ID)

    def deliver(user_id: str) -> None:
        payload = block_actions_payload(
            approval_id=v.approval_id,
            action_id="stanch_approve",
            user_id=user_id,
            channel_id=ref.channel,
            message_ts=ref.ts,
            response_url=seeded.response_url(),
        )
        headers, body = signed_interaction("signing", payload, 1_700_000_000)
        click = parse_interaction(verifier.verify(headers, body).body, team_id=TEAM_ID)
        assert click.kind == "click"
        ensure_same_message(click, channel_id=ref.channel, message_ts=ref.ts)
        verdict = authoriser.check(click.user_id)
        if not verdict.allowed:
            chat.tell_user(verdict.reason, response_url=click.response_url)
            return
        chat.mark_decided(
            ref.channel,
            ref.ts,
            v,
            FinalState(status="approved", by=[click.user_id], at=datetime.now(UTC)),
        )

    deliver("U0RANDOM")
    assert [r["text"] for r in seeded.responses] == ["you are not an approver for this channel"]
    assert seeded.calls_to("chat.update") == []

    deliver("U0ALICE")
    blocks = seeded.messages[(ref.channel, ref.ts)]["blocks"]
    assert all(b["type"] != "actions" for b in blocks)
    assert "<@U0ALICE>" in blocks[-1]["text"]["text"]
