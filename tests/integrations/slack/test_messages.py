"""Block Kit builders: hostile alert data renders inert, limits hold, shapes are Slack's."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from integrations.slack.fake import iter_text
from integrations.slack.messages import (
    MAX_PLANS,
    FinalState,
    approval_final,
    approval_request,
    deny_reason_errors,
    deny_reason_modal,
    escape,
    escape_clipped,
)
from tests.integrations.slack.factories import HOSTILE, plan, view
from tests.integrations.slack.shapes import assert_documented_blocks, assert_documented_view

# An "&" that does not start one of the three entities Slack decodes.
BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")
MENTION = re.compile(r"<@[UW][A-Z0-9]+>")


def hostile_view() -> Any:
    return view(
        incident_title=HOSTILE,
        tenant="acme",
        evidence=[HOSTILE, "powershell -enc ZQBjAGgAbwA= & <!here>"],
        plans=[
            plan(
                target=HOSTILE,
                target_label=HOSTILE,
                parameters={"comment": HOSTILE, "url": "http://evil.example/x"},
                policy_reason=HOSTILE,
            )
        ],
    )


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [obj["text"] for kind, obj in iter_text(blocks) if kind == "mrkdwn"]


def keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_escape_handles_exactly_slacks_three_control_characters() -> None:
    """Given text with & < > and other punctuation
    When escaped
    Then only & < > become entities (Slack decodes nothing else)."""
    assert escape("a & <b> \"c\" 'd' *e*") == "a &amp; &lt;b&gt; \"c\" 'd' *e*"


def test_hostile_alert_data_is_inert_in_every_mrkdwn_object() -> None:
    """Given a hostname, title, evidence, parameters and reason full of <!channel>,
    disguised links, *bold*, backticks and &
    When the approval message is built
    Then no mrkdwn text holds a raw < > or bare &, every mrkdwn is verbatim, and no
    special sequence survives anywhere in mrkdwn."""
    text, blocks = approval_request(hostile_view())

    texts = mrkdwn_texts(blocks)
    assert texts
    for t in texts:
        assert "<" not in t and ">" not in t, t
        assert not BARE_AMPERSAND.search(t), t
    assert all(obj.get("verbatim") is True for k, obj in iter_text(blocks) if k == "mrkdwn")
    assert "<" not in text and ">" not in text and not BARE_AMPERSAND.search(text)
    dumped = json.dumps(blocks)
    for special in ("<!channel>", "<!here>", "<http://evil.example|", "<@U0ADMIN>"):
        assert all(special not in t for t in texts)
    assert "&lt;!channel&gt;" in dumped


def test_backticks_cannot_close_a_code_span() -> None:
    """Given a target label with backticks and a newline
    When it is shown in a code span
    Then the span holds no backtick and no newline, so `*bold*` stays literal."""
    _, blocks = approval_request(view(plans=[plan(target_label="a`*bold*`\nb")]))

    plan_text = next(t for t in mrkdwn_texts(blocks) if t.startswith("*edr.contain_host*"))
    span = plan_text.split(" on ", 1)[1].split("\n", 1)[0]
    assert span.startswith("`") and span.endswith("`")
    assert "`" not in span[1:-1]
    assert "*bold*" in span  # inside the code span, so not formatted


def test_attacker_strings_only_reach_plain_text_raw() -> None:
    """Given the hostile view
    When built
    Then the raw hostile string appears only inside plain_text objects."""
    _, blocks = approval_request(hostile_view())

    raw_in = {kind for kind, obj in iter_text(blocks) if "<!channel>" in obj["text"]}
    assert raw_in == {"plain_text"}


def test_no_url_fields_are_built_from_alert_data() -> None:
    """Given alert data full of URLs
    When the request, final and modal payloads are built
    Then none of them has a url field (buttons carry only the approval id)."""
    v = hostile_view()
    _, request = approval_request(v)
    _, final = approval_final(v, FinalState(status="expired", at=datetime.now(UTC)))

    for payload in (request, final, deny_reason_modal(v.approval_id)):
        assert "url" not in keys(payload)


def test_request_shows_what_the_approver_must_see() -> None:
    """Given a two-plan request needing two approvers
    When built
    Then the blocks show both hashes (short and full), targets, policy reasons, evidence,
    the deadline and the required approvals, and end in Approve/Deny buttons."""
    second = plan(
        action="identity.suspend_user",
        target="00u1",
        target_label="jdoe",
        sha256="ab" * 32,
        policy_reason="privileged account",
    )
    v = view(plans=[plan(), second], required_approvals=2)

    text, blocks = approval_request(v)

    dumped = json.dumps(blocks, ensure_ascii=False)
    for needle in (
        "3f" * 32,
        "3f" * 6,
        "ab" * 32,
        "ab" * 6,
        "WS-0042",
        "jdoe",
        "needs one approver",
        "privileged account",
        "procdump.exe -ma lsass.exe",
        "2025-03-01 12:45 UTC",
        "2 distinct",
        "APR-0123456789",
    ):
        assert needle in dumped, needle
    assert "(+1 more)" in text
    actions = blocks[-1]
    assert actions["type"] == "actions"
    approve, deny = actions["elements"]
    assert (approve["action_id"], approve["style"], approve["value"]) == (
        "stanch_approve",
        "primary",
        "APR-0123456789",
    )
    assert (deny["action_id"], deny["style"], deny["value"]) == (
        "stanch_deny",
        "danger",
        "APR-0123456789",
    )
    assert approve["text"] == {"type": "plain_text", "text": "Approve", "emoji": False}
    assert_documented_blocks(blocks)


def test_hostile_message_is_still_documented_block_kit() -> None:
    """Given the hostile view
    When built
    Then every block is valid, documented Block Kit."""
    _, blocks = approval_request(hostile_view())
    assert_documented_blocks(blocks)


def test_long_values_are_truncated_with_an_ellipsis_within_slack_limits() -> None:
    """Given a 10 000-char title, 100 long evidence lines and labels of 5 000 '<'
    (each escapes to 4 characters)
    When built
    Then header fits 150, every section text fits 3000, cut values end with an ellipsis,
    no entity is cut in half, and Slack's models accept the blocks."""
    v = view(
        incident_title="T" * 10_000,
        evidence=["E" * 5_000] * 100,
        plans=[
            plan(
                target_label="<" * 5_000,
                target="&" * 5_000,
                parameters={"k": "v" * 5_000},
                policy_reason=">" * 5_000,
            )
        ],
    )

    text, blocks = approval_request(v)

    header = blocks[0]["text"]["text"]
    assert len(header) <= 150 and header.endswith("…")
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for f in block.get("fields", []):
            assert len(f["text"]) <= 2000
    evidence = next(b for b in blocks if b.get("text", {}).get("text", "").startswith("Evidence"))
    assert evidence["text"]["text"].endswith("…")
    for t in mrkdwn_texts(blocks):
        assert not BARE_AMPERSAND.search(t)
        assert not re.search(r"&(a|am|l|g|amp|lt|gt)?…", t)
    assert len(text) <= 3000
    assert_documented_blocks(blocks)


def test_escape_clipped_never_splits_an_entity() -> None:
    """Given text whose escaped form crosses the limit inside an entity
    When clipped
    Then the cut falls before the entity and the result fits."""
    assert escape_clipped("ab<cd", 5) == "ab…"
    assert escape_clipped("ab<cde", 7) == "ab&lt;…"
    assert escape_clipped("ab<cd", 8) == "ab&lt;cd"


def test_plan_count_is_bounded_by_the_block_limit() -> None:
    """Given the maximum number of plans
    When built
    Then the message stays within 50 blocks; one more plan is refused up front."""
    plans = [plan(sha256=f"{i:064x}") for i in range(MAX_PLANS)]
    _, blocks = approval_request(view(plans=plans))
    assert len(blocks) <= 50
    assert_documented_blocks(blocks)
    with pytest.raises(ValidationError):
        view(plans=[*plans, plan()])


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            FinalState(
                status="approved", by=["U0ALICE"], at=datetime(2025, 3, 1, 12, 40, tzinfo=UTC)
            ),
            "Approved* by <@U0ALICE> at 2025-03-01 12:40 UTC",
        ),
        (
            FinalState(
                status="approved",
                by=["U0ALICE", "W0BOB"],
                at=datetime(2025, 3, 1, 12, 40, tzinfo=UTC),
            ),
            "Approved* by <@U0ALICE>, <@W0BOB> at",
        ),
        (
            FinalState(
                status="denied",
                by=["U0BOB"],
                at=datetime(2025, 3, 1, 12, 41, tzinfo=UTC),
                reason="false positive <!channel> & co",
            ),
            "Denied* by <@U0BOB> at 2025-03-01 12:41 UTC"
            " — false positive &lt;!channel&gt; &amp; co",
        ),
        (
            FinalState(status="expired", at=datetime(2025, 3, 1, 12, 45, tzinfo=UTC)),
            "Expired* at 2025-03-01 12:45 UTC",
        ),
    ],
)
def test_final_state_replaces_the_buttons(state: FinalState, expected: str) -> None:
    """Given a decided (or expired) approval
    When the final message is built
    Then the actions block is gone and the last block names the decider, time and reason,
    with only validated user ids as mentions."""
    v = view()
    text, blocks = approval_final(v, state)

    assert all(b["type"] != "actions" for b in blocks)
    last = blocks[-1]["text"]
    assert last["type"] == "mrkdwn" and last["verbatim"] is True
    assert expected in last["text"]
    assert MENTION.sub("", last["text"]).count("<") == 0
    assert state.status in text
    assert_documented_blocks(blocks)


def test_final_state_shows_an_odd_decider_id_escaped() -> None:
    """Given a decider id that is not a Slack user id
    When the final message is built
    Then it is shown escaped in a code span, not as a mention."""
    state = FinalState(status="approved", by=["<!channel>"], at=datetime.now(UTC))
    _, blocks = approval_final(view(), state)
    assert "`&lt;!channel&gt;`" in blocks[-1]["text"]["text"]


def test_approved_or_denied_must_name_a_decider() -> None:
    """Given an approved state with nobody named
    When constructed
    Then it is refused."""
    with pytest.raises(ValidationError):
        FinalState(status="approved", at=datetime.now(UTC))


def test_deny_reason_modal_carries_the_approval_id() -> None:
    """Given an approval id
    When the deny-reason modal is built
    Then it is a documented modal with callback_id stanch_deny_reason, the approval id in
    private_metadata and a required plain_text_input at reason/value."""
    modal = deny_reason_modal("APR-0123456789", "INC-20250301-0007")

    assert modal["type"] == "modal"
    assert modal["callback_id"] == "stanch_deny_reason"
    assert modal["private_metadata"] == "APR-0123456789"
    reason = next(b for b in modal["blocks"] if b["type"] == "input")
    assert reason["block_id"] == "reason"
    assert reason["element"]["type"] == "plain_text_input"
    assert reason["element"]["action_id"] == "value"
    assert "optional" not in reason
    assert_documented_view(modal)


def test_deny_reason_modal_refuses_an_odd_approval_id() -> None:
    """Given an approval id with spaces and markup
    When the modal is built
    Then it is refused rather than sent."""
    with pytest.raises(ValueError, match="approval id"):
        deny_reason_modal("APR 1 <!channel>")


def test_deny_reason_errors_is_slacks_response_action_shape() -> None:
    """Given a validation message
    When the error ack body is built
    Then it is {"response_action": "errors", "errors": {block_id: message}}."""
    assert deny_reason_errors("say why") == {
        "response_action": "errors",
        "errors": {"reason": "say why"},
    }
