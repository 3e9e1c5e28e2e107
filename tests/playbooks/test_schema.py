"""Playbook validation: every error has its code, file, line and step; the library is valid."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from flows.playbook import (
    ACTIONS,
    ErrorCode,
    PlaybookError,
    load_playbook,
    load_playbooks,
    parse_playbook,
)
from flows.playbook.schema import ALERT_SOURCES
from integrations.capabilities import Capability
from tests.playbooks.helpers import HEAD, INVALID, PLAYBOOKS, REPO, playbook

FIXTURES = sorted([*INVALID.glob("*.yaml"), *INVALID.glob("*.py")])


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_each_invalid_fixture_fails_with_its_code(path: Path) -> None:
    """Given tests/playbooks/invalid/<code>.yaml (or .py for the Python playbook codes),
    When it is loaded,
    Then loading fails, every issue has that code, the file and a line inside the file."""
    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert {i.code for i in caught.value.issues} == {path.stem}
    for issue in caught.value.issues:
        assert issue.file == str(path)
        assert 1 <= issue.line <= lines
        assert str(issue).startswith(f"{path}:{issue.line}: {path.stem}: ")
        assert str(issue).endswith(f"(see playbooks/README.md#{path.stem})")


def test_the_library_is_valid() -> None:
    """Given playbooks/,
    When every file is loaded,
    Then all seven playbooks load, each id equal to its file name."""
    loaded = load_playbooks(PLAYBOOKS)
    assert [p.id for p in loaded] == [
        "c2-beacon",
        "compromised-account",
        "entra-risky-signin",
        "phishing-click",
        "ransomware",
        "siem-detection",
        "triage-low",
    ]
    assert all(Path(p.file).stem == p.id for p in loaded)


def test_issue_names_the_step_and_the_argument_line() -> None:
    """Given a step with a misspelt argument on line 13,
    When it is parsed,
    Then the issue carries the step id, that line and a suggestion."""
    text = HEAD + (
        "steps:\n"
        "  contain:\n"
        "    - id: isolate\n"
        "      action: edr.contain_host\n"
        "      args:\n"
        "        hostid: h1\n"
        "        reason: x\n"
    )
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, file="inline.yaml")
    issues = [i for i in caught.value.issues if i.code == "unknown-argument"]
    assert len(issues) == 1
    assert (issues[0].step, issues[0].line) == ("isolate", 12)
    assert "did you mean 'host_id'" in issues[0].message


def test_all_issues_are_reported_at_once() -> None:
    """Given a playbook with three independent mistakes,
    When it is parsed,
    Then one PlaybookError lists all three, in line order."""
    with pytest.raises(PlaybookError) as caught:
        playbook(
            """\
            steps:
              contain:
                - id: a
                  action: edr.nuke_host
                - id: b
                  action: identity.revoke_sessions
                  args: {user_id: "{{ nope }}"}
                - id: c
                  manual: "check {{ item }}"
            """
        )
    codes = [i.code for i in caught.value.issues]
    assert codes == ["unknown-action", "unknown-variable", "unknown-variable"]
    assert [i.line for i in caught.value.issues] == sorted(i.line for i in caught.value.issues)


def test_a_template_error_points_at_the_template_line() -> None:
    """Given a multi-line message whose second line has a broken tag,
    When it is parsed,
    Then the bad-template issue is on the line of the broken tag."""
    with pytest.raises(PlaybookError) as caught:
        playbook(
            """\
            steps:
              report:
                - id: tell
                  notify: "#soc"
                  message: |
                    first line is fine
                    second {% if %} is not
            """
        )
    assert caught.value.code == "bad-template"
    assert caught.value.line == 13


@pytest.mark.parametrize(
    ("field", "value"),
    [("for_each", "incident.hostnames"), ("when", "yes {{ true }}")],
)
def test_for_each_and_when_must_be_one_expression(field: str, value: str) -> None:
    """Given for_each or when written as plain text or with text around the braces,
    When it is parsed,
    Then it fails with bad-template, because it could never give a list or a condition."""
    with pytest.raises(PlaybookError) as caught:
        playbook(f'steps:\n  report:\n    - id: s\n      manual: x\n      {field}: "{value}"\n')
    assert caught.value.code == "bad-template"


def test_item_is_only_defined_in_loops() -> None:
    """Given a for_each that itself uses item,
    When it is parsed,
    Then unknown-variable: item exists only inside the loop."""
    with pytest.raises(PlaybookError) as caught:
        playbook('steps:\n  report:\n    - id: s\n      manual: x\n      for_each: "{{ item }}"\n')
    assert caught.value.code == "unknown-variable"


def test_a_self_dependency_is_a_cycle() -> None:
    """Given a step that depends on itself,
    When it is parsed,
    Then it fails with dependency-cycle."""
    with pytest.raises(PlaybookError) as caught:
        playbook("steps:\n  report:\n    - id: s\n      manual: x\n      depends_on: [s]\n")
    assert caught.value.code == "dependency-cycle"


def test_max_below_min_severity_is_bad_severity() -> None:
    """Given a trigger with max_severity below min_severity,
    When it is parsed,
    Then bad-severity on the max_severity line."""
    head = HEAD.replace("  min_severity: low\n", "  min_severity: high\n  max_severity: low\n")
    with pytest.raises(PlaybookError) as caught:
        playbook("steps:\n  report:\n    - id: s\n      manual: x\n", head=head)
    assert (caught.value.code, caught.value.line) == ("bad-severity", 7)


def test_a_missing_file_is_no_file() -> None:
    """Given a path that does not exist,
    When it is loaded,
    Then PlaybookError with code no-file and line 0."""
    with pytest.raises(PlaybookError) as caught:
        load_playbook(REPO / "playbooks" / "does-not-exist.yaml")
    assert (caught.value.code, caught.value.line) == (ErrorCode.NO_FILE, 0)


def test_executable_verbs_are_exactly_the_executor_verbs() -> None:
    """Given flows.tasks.ACTION_VERBS (what the executor accepts),
    When the non-lookup actions of the catalogue are listed with their parameters,
    Then they are the same verbs, and each one's non-target arguments are the parameters."""
    from flows.models import ACTION_VERBS

    planned = {
        name: tuple(p for p in spec.params if p != spec.target)
        for name, spec in ACTIONS.items()
        if not spec.lookup
    }
    executable = {
        f"{capability.value}.{verb}": params
        for capability, verbs in ACTION_VERBS.items()
        for verb, params in verbs.items()
    }
    assert planned == executable


def test_lookups_are_read_only_protocol_methods() -> None:
    """Given the catalogue's lookups,
    When each is compared with its protocol method,
    Then it exists there and is not a mutating verb with an inverse or receipt."""
    from integrations.capabilities import EDR, Firewall, IdentityProvider

    protocols = {Capability.EDR: EDR, Capability.IDENTITY: IdentityProvider}
    protocols[Capability.FIREWALL] = Firewall
    lookups = [spec for spec in ACTIONS.values() if spec.lookup]
    assert {s.name for s in lookups} == {
        "edr.find_host",
        "edr.get_host",
        "edr.hunt",
        "identity.find_user",
        "identity.get_user",
        "firewall.list_blocked",
    }
    for spec in lookups:
        method = getattr(protocols[spec.capability], spec.verb)
        assert "ActionReceipt" not in str(inspect.signature(method).return_annotation)


def test_alert_sources_are_the_vendors_with_alert_normalisers() -> None:
    """Given ALERT_SOURCES,
    When the integrations with an alerts.py are listed,
    Then they are the same vendors."""
    with_alerts = {p.parent.name for p in (REPO / "integrations").glob("*/alerts.py")}
    assert set(ALERT_SOURCES) == with_alerts
