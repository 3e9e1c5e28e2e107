"""The rules of engagement's SLA targets and auto-close rules: parsed, and refused with the
file's line, a stable code and the field when wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flows.policy import PolicyError, parse_policy
from integrations.ocsf import SeverityId

BASE = "version: 1\napprovers: {cli: true, cli_users: [alice@*]}\n"


def test_targets_per_severity_and_auto_close_rules_are_read() -> None:
    """Given SLA targets for critical incidents and two auto-close rules, When parsed,
    Then the targets are durations by severity and the rules keep their dispositions."""
    rules = parse_policy(
        BASE
        + "sla:\n  warn_before: 10m\n  targets:\n    critical: {acknowledge: 15m, contain: 1h}\n"
        + "auto_close:\n"
        + "  - {when: below-triage-threshold, after: 2h, disposition: false-positive}\n"
        + "  - {when: benign-verdict, playbook: phishing, disposition: benign-true-positive}\n"
    )
    critical = rules.sla.targets[SeverityId.CRITICAL]
    assert (critical.acknowledge, critical.contain, critical.resolve) == (
        timedelta(minutes=15),
        timedelta(hours=1),
        None,
    )
    assert rules.sla.warn_before == timedelta(minutes=10)
    assert [(r.when, r.playbook, r.disposition) for r in rules.auto_close] == [
        ("below-triage-threshold", None, "false-positive"),
        ("benign-verdict", "phishing", "benign-true-positive"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "code", "field"),
    [
        (
            "sla:\n  targets:\n    critical: {acknowledge: soon}\n",
            5,
            "bad-duration",
            "sla.targets.critical.acknowledge",
        ),
        (
            "sla:\n  targets:\n    urgent: {acknowledge: 15m}\n",
            5,
            "bad-severity",
            "sla.targets.urgent",
        ),
        (
            "sla:\n  targets:\n    critical: {acknowledged: 15m}\n",
            5,
            "unknown-field",
            "sla.targets.critical.acknowledged",
        ),
        (
            "auto_close:\n  - {when: benign-verdict, disposition: duplicate}\n",
            4,
            "invalid-value",
            "auto_close.0.disposition",
        ),
        (
            "auto_close:\n  - {when: always, disposition: false-positive}\n",
            4,
            "invalid-value",
            "auto_close.0.when",
        ),
        (
            "auto_close:\n  - {when: below-triage-threshold, playbook: x,"
            " disposition: false-positive}\n",
            4,
            "invalid-value",
            "auto_close.0",
        ),
    ],
)
def test_a_wrong_target_or_rule_names_line_code_and_field(
    text: str, line: int, code: str, field: str
) -> None:
    """Given a bad duration, an unknown severity or field, a duplicate auto-close, an
    unknown trigger, or a playbook on a rule that cannot use it,
    When parsed, Then the error gives the line, the stable code and the field."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(BASE + text)
    first = caught.value.issues[0]
    assert (first.code, first.field) == (code, field)
    assert first.line == line
