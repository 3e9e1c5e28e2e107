"""``stanch policy check``: a decision with its explanation, and file validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stanch.policy_cli import app

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
FIXTURES = REPO / "tests" / "flows" / "policies"


def run(*args: str) -> int:
    result = app(["check", *args], result_action="return_value")
    assert isinstance(result, int)
    return result


def test_check_prints_the_decision_and_its_explanation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the example acme policy (and no cap on approval timeouts),
    When a high-severity suspension of ACME's CEO is checked,
    Then exit 0 and the output shows verdict, count, approvers, timeout and explanation."""
    monkeypatch.delenv("STANCH_APPROVAL_TIMEOUT_SECONDS", raising=False)
    code = run(
        "--tenant", "acme", "--action", "identity.suspend_user",
        "--target", "ceo@acme.example", "--severity", "high", "--policies", str(POLICIES),
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines == [
        f"policy: {POLICIES / 'acme.yaml'}",
        "verdict: approval",
        "approvals required: 2",
        "approvers: @soc-leads, U0ACMELEAD1, U0ACMELEAD2 (via slack, cli)",
        "timeout: 30m, then deny",
        "suspend_user ceo@acme.example: approval by 2 of @soc-leads, U0ACMELEAD1, U0ACMELEAD2, "
        "because severity high and user in group executives",
    ]


def test_check_shows_a_cap_on_the_policys_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    """Given STANCH_APPROVAL_TIMEOUT_SECONDS=60 (the test run's setting),
    When acme's CEO suspension is checked, Then the capped wait is shown with the policy's."""
    run(
        "--tenant", "acme", "--action", "identity.suspend_user",
        "--target", "ceo@acme.example", "--severity", "high", "--policies", str(POLICIES),
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert (
        "timeout: 1m, then deny (the policy's 30m, capped by STANCH_APPROVAL_TIMEOUT_SECONDS)"
        in lines
    )


def test_check_uses_recent_and_user_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Given acme's containment budget of 5 an hour and its executives group,
    When a critical containment is checked with 5 recent, then with 0 recent and a VP named,
    Then both need approval: the first for the budget, the second for the group."""
    base = ["--tenant", "acme", "--action", "edr.contain_host", "--target", "LT-1"]
    base += ["--severity", "critical", "--policies", str(POLICIES)]
    assert run(*base, "--recent", "5") == 0
    budget = capsys.readouterr().out.splitlines()[-1]
    assert run(*base, "--user", "sales.vp@acme.example") == 0
    group = capsys.readouterr().out.splitlines()[-1]
    assert budget.endswith("and budget spent (5 of 5 per 1h)")
    assert group.endswith("and user in group executives")


def test_check_falls_back_to_the_default_policy(capsys: pytest.CaptureFixture[str]) -> None:
    """Given no globex.yaml,
    When a containment for globex is checked,
    Then the default policy decides."""
    code = run(
        "--tenant", "globex", "--action", "edr.contain_host", "--target", "WS-9",
        "--severity", "critical", "--policies", str(POLICIES),
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert f"policy: {POLICIES / 'default.yaml'}" in out
    assert "approval by 1 of @soc-analysts" in out


def test_check_without_the_facts_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Given no --validate,
    When check is missing --severity, or given a made-up severity,
    Then exit 2 with a message."""
    assert run("--tenant", "acme", "--action", "edr.contain_host", "--target", "WS-1") == 2
    assert "--severity" in capsys.readouterr().out
    args = ["--tenant", "acme", "--action", "edr.contain_host", "--target", "WS-1"]
    assert run(*args, "--severity", "severe") == 2
    assert "unknown severity 'severe'" in capsys.readouterr().out


def test_validate_accepts_the_example_policies(capsys: pytest.CaptureFixture[str]) -> None:
    """Given the policies directory,
    When --validate runs with no files,
    Then every file there is checked and exit is 0."""
    assert run("--validate", "--policies", str(POLICIES)) == 0
    assert capsys.readouterr().out.splitlines() == ["2 of 2 policy files valid"]


def test_validate_prints_file_line_code_message(capsys: pytest.CaptureFixture[str]) -> None:
    """Given two invalid fixtures and one valid policy,
    When they are validated,
    Then each error is one file:line: code: message line and exit is 1."""
    bad_cidr, unsafe = FIXTURES / "bad-cidr.yaml", FIXTURES / "unsafe-timeout.yaml"
    code = run("--validate", str(bad_cidr), str(unsafe), str(POLICIES / "acme.yaml"))
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines == [
        f"{bad_cidr}:8: bad-cidr: protected.ips.1: '10.0.0.5/24' is not an IP range in CIDR "
        "form: 10.0.0.5/24 has host bits set",
        f"{unsafe}:10: unsafe-timeout: actions.edr.contain_host.on_timeout: edr.contain_host "
        "is a containment verb: a timeout can only deny it",
        "1 of 3 policy files valid",
    ]


def test_check_reports_an_invalid_tenant_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given an acme.yaml with a misspelled key,
    When a decision is checked for acme,
    Then exit 1 with the file:line: code: message line, not a decision."""
    (tmp_path / "acme.yaml").write_text("version: 1\napprover: {cli: true}\n")
    code = run(
        "--tenant", "acme", "--action", "edr.contain_host", "--target", "WS-1",
        "--severity", "low", "--policies", str(tmp_path),
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert f"{tmp_path / 'acme.yaml'}:2: unknown-field: approver: unknown field" in out
    assert "verdict" not in out


def test_the_policy_cli_does_not_import_prefect() -> None:
    """Given a fresh interpreter,
    When the policy CLI module is imported (as `stanch` will at start-up),
    Then Prefect is not imported, so the command stays fast."""
    probe = "import sys, stanch.policy_cli; print('prefect' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
