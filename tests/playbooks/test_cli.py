"""``stanch playbook``: validate, plan, test and route, with their exit codes and output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stanch.playbook_cli import app
from tests.playbooks.helpers import INVALID, PLAYBOOKS, REPO

EXAMPLES = PLAYBOOKS / "examples"


def run(*args: str) -> int:
    result = app(list(args), result_action="return_value")
    assert isinstance(result, int)
    return result


def test_validate_accepts_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    """Given playbooks/,
    When validated,
    Then exit 0 and a count of valid playbooks."""
    assert run("validate", str(PLAYBOOKS)) == 0
    assert capsys.readouterr().out == "7 playbooks valid\n"


def test_validate_prints_file_line_code_message(capsys: pytest.CaptureFixture[str]) -> None:
    """Given a valid playbook and an invalid fixture,
    When both are validated,
    Then exit 1 and exactly one error line, file:line: code: message."""
    bad = INVALID / "wrong-stage.yaml"
    code = run("validate", str(PLAYBOOKS / "c2-beacon.yaml"), str(bad))
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines == [
        f"{bad}:11: wrong-stage: step isolate: edr.contain_host belongs in contain, not "
        "remediate (see playbooks/README.md#wrong-stage)"
    ]


def test_validate_of_a_missing_file_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """Given a path that does not exist,
    When validated,
    Then exit 1 with a no-file line."""
    assert run("validate", "no/such/playbook.yaml") == 1
    assert ": no-file: " in capsys.readouterr().out


def test_plan_prints_plans_with_policy_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    """Given the ransomware playbook, the demo alerts and the bundled default policy,
    When planned as a dry run,
    Then every plan is printed with its verdict and explanation, and the honest steps too."""
    code = run(
        "plan", str(PLAYBOOKS / "ransomware.yaml"),
        "--alert", str(EXAMPLES / "ransomware" / "ransomware.json"),
        "--alert", str(EXAMPLES / "ransomware" / "impossible-travel.json"),
        "--policies", str(REPO / "policies"),
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "ransomware v3 (" in out and "for INC-20250314-0001, tenant demo" in out
    assert (
        "  isolate_hosts: edr.contain_host WS-0042 (reason=stanch INC-20250314-0001) -> "
        "approval by 1 of @soc-analysts\n"
    ) in out
    block = "  block_hash: edr.block_hash 8f2b7c1e5a9d4f3b (reason=stanch INC-20250314-0001)"
    assert f"{block} -> unattended\n" in out
    assert "  release_hosts: waiting: waiting for an analyst to confirm:" in out
    # The dry run's lab simulators know only the alert's hosts: the hunt finds none else.
    assert "  hunt_hash: looked up: hunted sha256 8f2b7c1e5a9d4f3b… on 0 host(s)\n" in out
    assert "  isolate_hunted: skipped: nothing to do: for_each gave no items\n" in out


def test_plan_with_a_confirmed_release_requires_approval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a policy that lets edr.release_host run unattended, and the release step
    (approval: required) confirmed,
    When planned,
    Then release_host is planned and still needs approval: the playbook tightened policy."""
    default = (REPO / "policies" / "default.yaml").read_text(encoding="utf-8")
    lenient = default + "  edr.release_host:\n    unattended_from: informational\n"
    (tmp_path / "default.yaml").write_text(lenient, encoding="utf-8")
    code = run(
        "plan", str(PLAYBOOKS / "ransomware.yaml"),
        "--alert", str(EXAMPLES / "ransomware" / "ransomware.json"),
        "--confirm", "release_hosts", "--policies", str(tmp_path),
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    [line] = [x for x in out.splitlines() if x.startswith("  release_hosts: edr.release_host")]
    assert line.endswith("-> approval by 1 of @soc-analysts")
    assert "playbook step release_hosts requires approval" in out


def test_plan_rejects_a_bad_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Given an alert file that is not a Detection Finding,
    When planned,
    Then exit 2 naming the field."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"class_uid": 2004}')
    assert run("plan", str(PLAYBOOKS / "ransomware.yaml"), "--alert", str(bad)) == 2
    assert "bad alert: " in capsys.readouterr().out


def test_plan_of_an_invalid_playbook_prints_its_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """Given an invalid playbook,
    When planned,
    Then exit 1 with its validation lines."""
    alert = EXAMPLES / "ransomware" / "ransomware.json"
    assert run("plan", str(INVALID / "unknown-action.yaml"), "--alert", str(alert)) == 1
    assert ": unknown-action: " in capsys.readouterr().out


def test_test_passes_for_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    """Given the library and its examples,
    When `stanch playbook test` runs,
    Then every case passes for all six playbooks."""
    assert run("test", "--playbooks", str(PLAYBOOKS)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "7 playbooks, 14 cases, 0 failed"
    assert "FAIL" not in out


def test_test_fails_on_a_wrong_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a copy of the library where one expected parameter is wrong,
    When `stanch playbook test` runs on it,
    Then exit 1 and the failing case shows expected and produced plans."""
    copy = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, copy)
    expected = copy / "examples" / "c2-beacon" / "expected.yaml"
    spec = yaml.safe_load(expected.read_text())
    spec["cases"][0]["plans"]["contain"][0]["parameters"]["ttl_seconds"] = 60
    expected.write_text(yaml.safe_dump(spec))
    assert run("test", "--playbooks", str(copy)) == 1
    out = capsys.readouterr().out
    assert "FAIL c2-beacon: two-hosts-one-server" in out
    assert '"ttl_seconds": 60' in out and '"ttl_seconds": 604800' in out
    assert out.splitlines()[-1] == "7 playbooks, 14 cases, 1 failed"


def test_test_fails_for_a_playbook_without_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a playbook directory with a playbook but no examples,
    When `stanch playbook test` runs,
    Then exit 1 naming the missing expected file."""
    (tmp_path / "c2-beacon.yaml").write_text((PLAYBOOKS / "c2-beacon.yaml").read_text())
    assert run("test", "--playbooks", str(tmp_path)) == 1
    assert "FAIL c2-beacon: no examples" in capsys.readouterr().out


def test_route_says_which_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    """Given the phishing example alert,
    When routed,
    Then exit 0, phishing-click is chosen and its matching criteria are listed."""
    code = run(
        "route", str(EXAMPLES / "phishing-click" / "url-click.json"), "--playbooks", str(PLAYBOOKS)
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == f"routed to phishing-click ({PLAYBOOKS / 'phishing-click.py'})"
    assert "  technique T1566 matches" in lines


def test_route_exits_1_when_nothing_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given only the ransomware playbook and a low-severity alert,
    When routed,
    Then exit 1 and the reasons say why it does not fit."""
    (tmp_path / "ransomware.yaml").write_text((PLAYBOOKS / "ransomware.yaml").read_text())
    alert = EXAMPLES / "triage-low" / "pup.json"
    assert run("route", str(alert), "--playbooks", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "no playbook's trigger fits" in out and "ransomware: does not fit" in out


def test_the_playbook_cli_does_not_import_prefect() -> None:
    """Given a fresh interpreter,
    When the playbook CLI runs a dry-run plan,
    Then Prefect was never imported: a dry run touches no orchestration."""
    probe = (
        "import sys\n"
        "from stanch.playbook_cli import app\n"
        "app(['plan', 'playbooks/ransomware.yaml', '--alert',"
        " 'playbooks/examples/ransomware/ransomware.json'], result_action='return_value')\n"
        "print('prefect' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "False"
