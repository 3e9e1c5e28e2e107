"""The incident summary's Block Kit: hostile alert data stays text, the list stays short."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from integrations.slack import SummaryAction, SummaryView, incident_summary
from integrations.slack.fake import iter_text
from integrations.slack.messages import (
    MAX_SUMMARY_ACTIONS,
    SECTION_TEXT_LIMIT,
    duration,
)
from tests.integrations.slack.shapes import assert_documented_blocks

HOSTILE = "web-01 <!channel> <http://evil.example|click here> *bold* &lt; `x` _it_ ~s~"
BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")
CODE_SPAN = re.compile(r"`[^`]*`")
MENTION_OTHER = re.compile(r"<@[UW][A-Z0-9]+>")
SHA = "ab" * 32


def action(**overrides: Any) -> SummaryAction:
    values: dict[str, Any] = {
        "action": "edr.contain_host",
        "target_label": "WS-0042",
        "status": "executed",
        "approvers": ["slack:UALICE"],
        "sha256": SHA,
    }
    values.update(overrides)
    return SummaryAction.model_validate(values)


def summary(**overrides: Any) -> SummaryView:
    values: dict[str, Any] = {
        "incident_id": "INC-20250301-0007",
        "incident_title": "Credential dumping on WS-0042",
        "severity": "high",
        "tenant": "acme",
        "actions": [
            action(),
            action(
                action="identity.suspend_user",
                target_label="jdoe",
                status="denied",
                approvers=[],
                sha256="cd" * 32,
            ),
        ],
        "in_effect": ["edr.contain_host WS-0042"],
        "time_to_contain": 252.4,
        "time_to_acknowledge": 61.0,
        "report_location": "reports/INC-20250301-0007.html",
        "ledger_verified": True,
        "ledger_message": "ledger OK: 12 entries",
    }
    values.update(overrides)
    return SummaryView.model_validate(values)


def hostile_summary() -> SummaryView:
    return summary(
        incident_title=HOSTILE,
        actions=[action(target_label=HOSTILE, approvers=[f"cli:{HOSTILE}"])],
        in_effect=[f"edr.contain_host {HOSTILE}"],
        report_location=f"https://reports.example/{HOSTILE}",
        ledger_verified=False,
        ledger_message=f"entry 7 ({HOSTILE}) was edited",
    )


def texts(blocks: list[dict[str, Any]], kind: str) -> list[str]:
    return [obj["text"] for k, obj in iter_text(blocks) if k == kind]


def test_hostile_alert_data_is_inert_in_every_mrkdwn_object() -> None:
    """Given a title, hostname, approver, in-effect line, report location and ledger message
    full of <!channel>, a disguised link, *bold*, _italics_, ~strike~, backticks and &lt;
    When the summary is built
    Then no mrkdwn text holds a raw < > or bare &, every mrkdwn object is verbatim, and
    outside code spans none of the hostile words appear (so no formatting applies)."""
    _, blocks = incident_summary(hostile_summary())

    mrkdwn = texts(blocks, "mrkdwn")
    assert mrkdwn
    assert all(o.get("verbatim") is True for k, o in iter_text(blocks) if k == "mrkdwn")
    for text in mrkdwn:
        assert "<" not in text and ">" not in text, text
        assert not BARE_AMPERSAND.search(text), text
        outside = CODE_SPAN.sub("", text)
        for word in ("channel", "evil", "click here", "bold", "_it_", "~s~"):
            assert word not in outside, (word, text)
    joined = "\n".join(mrkdwn)
    # The literal "&lt;" an attacker typed shows as "&lt;": its & is escaped once.
    assert "&amp;lt;" in joined
    assert "&lt;!channel&gt;" in joined
    # Backticks cannot close the span early.
    assert "`x`" not in joined


def test_the_title_goes_out_only_as_plain_text() -> None:
    """Given a hostile title
    When the summary is built
    Then the header is plain_text carrying the title raw (Slack does not parse it), and
    the fallback notification text carries no alert text at all."""
    text, blocks = incident_summary(hostile_summary())

    header = blocks[0]
    assert header["type"] == "header"
    assert header["text"]["type"] == "plain_text"
    assert header["text"]["text"] == f"Incident summary: {HOSTILE}"
    assert "channel" not in text and "evil" not in text and "<" not in text
    assert text == "INC-20250301-0007 summary: 1 action(s), 1 still in effect"


def test_the_report_location_is_text_not_a_link() -> None:
    """Given a report URL
    When the summary is built
    Then it appears in a code span, no block has a url field and no <…|…> link exists."""
    _, blocks = incident_summary(summary(report_location="https://reports.example/INC-1.html"))

    dumped = json.dumps(blocks)
    assert "`https://reports.example/INC-1.html`" in dumped
    assert '"url"' not in dumped
    assert "<http" not in dumped


def test_the_summary_says_what_happened() -> None:
    """Given an executed containment, a denied suspension, one action in effect, clocks,
    a report and a verified ledger
    When the summary is built
    Then the blocks show the incident id, severity, tenant, each action's verb, target,
    status, approvers and short plan hash, what is in effect, the time to contain, the
    report and the ledger line; in Slack's documented shapes."""
    text, blocks = incident_summary(summary())

    assert_documented_blocks(blocks)
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "context"]
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == [
        "*Incident*\n`INC-20250301-0007`",
        "*Severity*\n`high`",
        "*Tenant*\n`acme`",
        "*Time to contain*\n4 m 12 s",
        "*Time to acknowledge*\n1 m 01 s",
    ]
    actions = blocks[2]["text"]["text"].split("\n")
    assert actions == [
        "*Actions*",
        "• :white_check_mark: `edr.contain_host` on `WS-0042` — executed · by <@UALICE>"
        " · plan `abababababab`",
        "• :no_entry: `identity.suspend_user` on `jdoe` — denied · plan `cdcdcdcdcdcd`",
    ]
    assert blocks[3]["text"]["text"] == "*Still in effect*\n• `edr.contain_host WS-0042`"
    context = [e["text"] for e in blocks[4]["elements"]]
    assert context == [
        "Report: `reports/INC-20250301-0007.html`",
        ":white_check_mark: Ledger verified: `ledger OK: 12 entries`",
    ]
    assert text == "INC-20250301-0007 summary: 2 action(s), 1 still in effect"


@pytest.mark.parametrize(
    ("who", "shown"),
    [
        ("slack:UALICE", "<@UALICE>"),
        ("cli:alice@soc-1", "`alice@soc-1` (cli)"),
        ("policy:unattended", "policy (unattended)"),
        ("slack:<!channel>", "`&lt;!channel&gt;` (slack)"),
        ("odd", "`odd`"),
    ],
)
def test_approvers_read_as_people_not_codes(who: str, shown: str) -> None:
    """Given an action authorised by a Slack user, a CLI operator, policy, or an odd id
    When the summary is built
    Then a Slack user is a mention, the others are inert text naming the channel, and no
    odd id becomes a mention."""
    view = summary(
        actions=[
            SummaryAction(
                action="edr.contain_host",
                target_label="WS-0042",
                status="executed",
                approvers=[who],
            )
        ]
    )
    _, blocks = incident_summary(view)
    line = blocks[2]["text"]["text"]
    assert f"by {shown}" in line
    assert MENTION_OTHER.sub("", line).count("<") == 0


def test_the_report_url_is_a_link_to_prefect() -> None:
    """Given the report's Prefect artifact address (configuration, not alert data)
    When the summary is built
    Then the context links it; an address that could close the link is refused."""
    url = "http://127.0.0.1:4200/artifacts/artifact/0b1c2d3e-aaaa-bbbb-cccc-000000000001"
    _, blocks = incident_summary(summary(report_url=url))
    assert blocks[-1]["elements"][0]["text"] == f"<{url}|Open the report in Prefect>"
    with pytest.raises(ValidationError):
        summary(report_url="http://x/|<!channel>")


@pytest.mark.parametrize(
    ("verified", "line"),
    [
        (False, ":warning: *Ledger NOT verified*: `entry 3 was edited`"),
        (None, ":grey_question: Ledger not checked: `entry 3 was edited`"),
    ],
)
def test_a_ledger_that_did_not_verify_is_called_out(verified: bool | None, line: str) -> None:
    """Given a ledger that failed verification (or was not checked)
    When the summary is built
    Then the ledger line says so instead of claiming it verified."""
    _, blocks = incident_summary(
        summary(ledger_verified=verified, ledger_message="entry 3 was edited")
    )
    assert blocks[-1]["elements"][-1]["text"] == line


def test_failed_stages_and_an_empty_incident_read_as_such() -> None:
    """Given no actions, nothing in effect, containment never reached and a failed stage
    When the summary is built
    Then it says none were planned, nothing is in effect, the clock is a dash, the failed
    stage is flagged in the blocks and in the notification, and no report line appears."""
    text, blocks = incident_summary(
        summary(
            actions=[],
            in_effect=[],
            time_to_contain=None,
            time_to_acknowledge=None,
            report_location="",
            failed_stages=["contain"],
        )
    )

    assert_documented_blocks(blocks)
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Time to contain*\n—" in fields
    assert ":warning: *Failed stages*\n`contain`" in fields
    assert not any("first decision" in f for f in fields)
    assert blocks[2]["text"]["text"] == "*Actions*\nNone were planned."
    assert blocks[3]["text"]["text"] == "*Still in effect*\nNothing stanch did is still in effect."
    assert [e["text"] for e in blocks[4]["elements"]] == [
        ":white_check_mark: Ledger verified: `ledger OK: 12 entries`"
    ]
    assert text.endswith("; failed stages: contain")


def test_a_large_incident_stays_compact_and_within_slacks_limits() -> None:
    """Given 60 actions and 30 in-effect lines with long hostile labels
    When the summary is built
    Then at most MAX_SUMMARY_ACTIONS actions are listed, the rest are counted, every text
    fits Slack's 3000-character section limit, and the blocks stay documented."""
    many = [action(target_label=f"{HOSTILE} {i} " + "x" * 300) for i in range(60)]
    _, blocks = incident_summary(
        summary(actions=many, in_effect=[f"edr.contain_host host-{i} {HOSTILE}" for i in range(30)])
    )

    assert_documented_blocks(blocks)
    listed = blocks[2]["text"]["text"].split("\n")[1:]
    shown = [line for line in listed if line.startswith("• ")]
    assert 0 < len(shown) <= MAX_SUMMARY_ACTIONS
    assert listed[-1] == f"… and {60 - len(shown)} more in the report"
    still = blocks[3]["text"]["text"].split("\n")
    assert still[-1] == f"… and {30 - (len(still) - 2)} more in the report"
    for text in texts(blocks, "mrkdwn"):
        assert len(text) <= SECTION_TEXT_LIMIT


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (0, "0 s"),
        (42.4, "42 s"),
        (252.4, "4 m 12 s"),
        (7500, "2 h 05 m"),
        (86400, "1 d"),
        (7200, "2 h"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
        (-5, "-5 s"),
    ],
)
def test_durations_read_like_a_clock(seconds: float | None, shown: str) -> None:
    """Given a clock in seconds (or None when never reached)
    When formatted
    Then it reads as a short human duration; a negative clock (skewed alert time) keeps
    its sign instead of pretending to be positive."""
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "Executed!"), ("sha256", "not-a-hash"), ("action", "")],
)
def test_malformed_actions_are_refused_naming_the_field(field: str, value: str) -> None:
    """Given an action with a malformed status, plan hash or empty verb
    When the summary action is built
    Then validation fails and names the field."""
    with pytest.raises(ValidationError) as caught:
        action(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)
