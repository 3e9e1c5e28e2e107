"""Block Kit builders: hostile alert data renders inert, limits hold, shapes are Slack's."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from integrations.slack.approval_message import (
    MAX_PLANS,
    FinalState,
    approval_final,
    approval_request,
    deny_reason_errors,
    deny_reason_modal,
)
from integrations.slack.fake import iter_text
from integrations.slack.messages import escape, escape_clipped
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

    plan_text = next(t for t in mrkdwn_texts(blocks) if t.startswith("*Asked to approve"))
    line = plan_text.split("\n")[1]
    found = re.search(r"Isolate host (`[^`]*`)", line)
    assert found is not None, line
    span = found.group(1)
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
    """Given a two-plan request needing two approvers, with evidence and ATT&CK
    When built
    Then the blocks lead with the facts (severity, verdict and risk, tenant, incident,
    deadline, approvers needed) and what was seen, then one compact line per action with
    its short hash, the full hashes in a context block, the policy reasons, what Deny and
    silence mean, and end in the controls (no checkboxes under the two-person rule)."""
    second = plan(
        action="identity.suspend_user",
        target="00u1",
        target_label="jdoe",
        vendor="okta",
        sha256="ab" * 32,
        policy_reason="privileged account",
    )
    v = view(
        plans=[plan(vendor="crowdstrike"), second],
        required_approvals=2,
        severity="critical",
        verdict="true_positive",
        risk_score=95,
        techniques=["T1003.001 LSASS Memory"],
    )

    text, blocks = approval_request(v)

    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields[:5] == [
        "*Severity*\nCritical",
        "*Verdict*\ntrue positive · risk 95/100",
        "*Tenant*\nacme",
        "*Incident*\nINC-20250301-0007",
        "*Decide by*\n2025-03-01 12:45 UTC",
    ]
    assert "*Approvals required*\n2 distinct people" in fields
    seen = blocks[2]["text"]
    assert seen["type"] == "plain_text"
    assert seen["text"].startswith("What was seen:\n• procdump.exe -ma lsass.exe")
    assert "ATT&CK: T1003.001 LSASS Memory" in seen["text"]
    lines = blocks[3]["text"]["text"].split("\n")
    assert lines == [
        "*Asked to approve (2 actions)*",
        "• Isolate host `WS-0042` (CrowdStrike) `comment=INC-20250301-0007` · plan `3f3f3f3f3f3f`",
        "• Suspend user `jdoe` (Okta) `comment=INC-20250301-0007` · plan `abababababab`",
    ]
    dumped = json.dumps(blocks, ensure_ascii=False)
    for needle in ("3f" * 32, "ab" * 32, "needs one approver", "privileged account"):
        assert needle in dumped, needle
    assert "(+1 more)" in text
    assert not any(e["type"] == "checkboxes" for b in blocks for e in b.get("elements", []))
    buttons = next(b for b in blocks if b.get("block_id") == "stanch_approval:APR-0123456789")
    assert [(e["action_id"], e.get("style")) for e in buttons["elements"]] == [
        ("stanch_approve", "primary"),
        ("stanch_deny", None),
        ("stanch_deny_stop", "danger"),
    ]
    assert [e["text"]["text"] for e in buttons["elements"]] == [
        "Approve all",
        "Deny these actions",
        "Deny (false positive — stop)",
    ]
    assert all(e["value"] == "APR-0123456789" for e in buttons["elements"])
    explained = blocks[-1]["elements"][0]["text"]
    assert "stops the response" in explained
    assert "No decision by 2025-03-01 12:45 UTC means deny: nothing is done." in explained
    assert_documented_blocks(blocks)


def test_several_plans_and_one_approver_get_a_checkbox_per_plan() -> None:
    """Given 12 plans and one approver
    When built
    Then each plan has a ticked checkbox whose value is its full hash, in groups of at most
    ten (Slack's limit), and "Approve selected" sits between Approve all and Deny."""
    plans = [plan(sha256=f"{i:064x}", target_label=f"WS-{i:04d}") for i in range(12)]
    _, blocks = approval_request(view(plans=plans))

    groups = [b for b in blocks if b.get("block_id", "").startswith("stanch_select:")]
    assert [b["block_id"] for b in groups] == [
        "stanch_select:APR-0123456789:0",
        "stanch_select:APR-0123456789:1",
    ]
    options = [o for b in groups for o in b["elements"][0]["options"]]
    assert [o["value"] for o in options] == [p.sha256 for p in plans]
    assert all(b["elements"][0]["initial_options"] == b["elements"][0]["options"] for b in groups)
    assert all(len(b["elements"][0]["options"]) <= 10 for b in groups)
    assert options[3]["text"]["type"] == "plain_text"
    assert options[3]["text"]["text"].startswith("Isolate host WS-0003")
    buttons = blocks[blocks.index(groups[-1]) + 1]
    assert [e["action_id"] for e in buttons["elements"]] == [
        "stanch_approve",
        "stanch_approve_selected",
        "stanch_deny",
        "stanch_deny_stop",
    ]
    assert_documented_blocks(blocks)


def test_the_flow_run_link_comes_only_from_a_plain_address() -> None:
    """Given the flow run's Prefect UI address
    When built
    Then the last context links it; an address that could close the link is refused."""
    url = "http://127.0.0.1:4200/runs/flow-run/0b1c2d3e-aaaa-bbbb-cccc-000000000001"
    _, blocks = approval_request(view(flow_run_url=url))
    assert f"<{url}|Open the flow run in Prefect>" in blocks[-1]["elements"][0]["text"]
    with pytest.raises(ValidationError):
        view(flow_run_url="http://x/|<!channel>")
    with pytest.raises(ValidationError):
        view(flow_run_url="javascript:alert(1)")


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
    evidence = next(
        b for b in blocks if b.get("text", {}).get("text", "").startswith("What was seen")
    )
    assert "…" in evidence["text"]["text"]
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


def test_partial_and_stopped_decisions_say_what_they_did() -> None:
    """Given a partial approval of one of two plans, and a false-positive stop
    When the final messages are built
    Then the first names the approved and the denied action, the second says the response
    was stopped and the incident awaits closure, with the reason escaped."""
    second = plan(action="firewall.block_ip", target_label="203.0.113.9", sha256="ab" * 32)
    v = view(plans=[plan(), second])
    at = datetime(2025, 3, 1, 12, 40, tzinfo=UTC)

    _, blocks = approval_final(
        v, FinalState(status="partial", by=["U0ALICE"], at=at, approved=["3f" * 32])
    )
    line = blocks[-1]["text"]["text"]
    assert "*Approved 1 of 2* by <@U0ALICE>" in line
    assert "Isolate host `WS-0042`; denied: Block IP `203.0.113.9`" in line

    text, blocks = approval_final(
        v, FinalState(status="denied", by=["U0BOB"], at=at, reason="travel <!here>", stopped=True)
    )
    line = blocks[-1]["text"]["text"]
    assert "*Denied as a false positive — response stopped* by <@U0BOB>" in line
    assert "travel &lt;!here&gt;" in line and "marked for closure" in line
    assert "stopped" in text
    assert all(b["type"] != "actions" for b in blocks)
    with pytest.raises(ValidationError):
        FinalState(status="approved", by=["U0BOB"], at=at, stopped=True)


def test_deny_stop_modal_has_its_own_callback() -> None:
    """Given the false-positive denial
    When its modal is built
    Then it has the stop callback id, says what stopping does, and is a documented view."""
    modal = deny_reason_modal("APR-0123456789", "INC-20250301-0007", stop=True)
    assert modal["callback_id"] == "stanch_deny_stop_reason"
    assert "Nothing more will run" in modal["blocks"][0]["text"]["text"]
    assert_documented_view(modal)


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
