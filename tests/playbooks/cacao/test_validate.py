"""Invalid CACAO documents are refused with their JSON pointer, and nothing is written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.playbook import CacaoError, CacaoRule, check_document, import_document
from stanch.playbook_cli import app
from tests.playbooks.helpers import PLAYBOOKS

HERE = Path(__file__).resolve().parent
INVALID = HERE / "invalid"

# rule -> the pointer its fixture must be reported at
EXPECTED = {
    "cacao-json": "",
    "cacao-duplicate-id": "/workflow/end--00000000-0000-4000-8000-000000000103",
    "cacao-schema": "/workflow/action--00000000-0000-4000-8000-000000000102",
    "cacao-start": "/workflow_start",
    "cacao-step-type": "/workflow/check--00000000-0000-4000-8000-000000000104",
    "cacao-reference": "/workflow/action--00000000-0000-4000-8000-000000000102/on_completion",
    "cacao-no-end": "/workflow/action--00000000-0000-4000-8000-000000000105",
    "cacao-cycle": "/workflow/action--00000000-0000-4000-8000-000000000102",
    "cacao-content": "/commands/0/content_b64",
    "cacao-extension": "/stage",
    "cacao-mismatch": "/commands",
    "cacao-stanch": "/workflow/action--00000000-0000-4000-8000-000000000102",
}
NO_FIXTURE = {"cacao-no-file"}


def run(*args: str) -> int:
    result = app(list(args), result_action="return_value")
    assert isinstance(result, int)
    return result


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_each_invalid_fixture_is_refused_with_its_rule_and_pointer(rule: str) -> None:
    """Given tests/playbooks/cacao/invalid/<rule>.json,
    When it is imported,
    Then a CacaoError names that rule first, at the expected JSON pointer."""
    path = INVALID / f"{rule}.json"
    with pytest.raises(CacaoError) as caught:
        import_document(path.read_text(encoding="utf-8"), str(path))
    first = caught.value.issues[0]
    assert first.rule == rule
    assert first.pointer.endswith(EXPECTED[rule]) if EXPECTED[rule] else first.pointer == ""


def test_validate_prints_file_pointer_rule_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    """Given a document whose action step has a dangling on_completion,
    When `stanch playbook validate` checks it beside a valid YAML playbook,
    Then exit 1 and exactly one line: file: pointer: rule: reason (see README)."""
    bad = INVALID / "cacao-reference.json"
    assert run("validate", str(PLAYBOOKS / "c2-beacon.yaml"), str(bad)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}: /workflow/action--00000000-0000-4000-8000-000000000102/on_completion: "
        "cacao-reference: on_completion names 'end--00000000-0000-4000-8000-000000000199', "
        "which is not in the workflow (see playbooks/README.md#cacao-reference)"
    ]


def test_validate_accepts_a_valid_cacao_document(capsys: pytest.CaptureFixture[str]) -> None:
    """Given a foreign CACAO playbook,
    When validated,
    Then exit 0."""
    assert run("validate", str(HERE / "community-ransomware.json")) == 0
    assert capsys.readouterr().out == "1 playbook valid\n"


@pytest.mark.parametrize("rule", ["cacao-json", "cacao-cycle", "cacao-mismatch", "cacao-stanch"])
def test_a_refused_import_writes_nothing(
    rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given an invalid document,
    When `stanch playbook import` is asked to write it into a directory,
    Then exit 1, the issue is printed with its pointer, and the directory stays empty."""
    assert run("import", str(INVALID / f"{rule}.json"), "-o", str(tmp_path)) == 1
    assert f": {rule}: " in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_import_with_json_reports_issues_as_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a document with a cycle,
    When imported with --json,
    Then exit 1 and one JSON object lists the issue with pointer and rule."""
    assert run("import", str(INVALID / "cacao-cycle.json"), "-o", str(tmp_path), "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["issues"][0]["rule"] == "cacao-cycle"
    assert out["issues"][0]["pointer"].startswith("/workflow/")


def test_an_unreadable_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Given a path that does not exist,
    When imported or validated,
    Then exit 1 with cacao-no-file."""
    missing = tmp_path / "nope.json"
    assert run("import", str(missing), "-o", str(tmp_path)) == 1
    assert run("validate", str(missing)) == 1
    assert "cacao-no-file" in capsys.readouterr().out + ""


def test_a_while_loop_is_the_one_allowed_cycle() -> None:
    """Given a loop whose body leads back to its while-condition,
    When validated,
    Then it is accepted (the same loop without the while-condition is cacao-cycle)."""
    doc = json.loads((INVALID / "cacao-cycle.json").read_text(encoding="utf-8"))
    loop = "while-condition--00000000-0000-4000-8000-000000000107"
    first = "action--00000000-0000-4000-8000-000000000102"
    body = "action--00000000-0000-4000-8000-000000000106"
    doc["workflow"][first]["on_completion"] = loop
    doc["workflow"][loop] = {
        "type": "while-condition",
        "condition": "__dirty__:value = 'true'",
        "on_true": body,
        "on_completion": "end--00000000-0000-4000-8000-000000000108",
    }
    doc["workflow"][body] = {**doc["workflow"][body], "on_success": loop}
    doc["workflow"]["end--00000000-0000-4000-8000-000000000108"] = {"type": "end"}
    check_document(json.dumps(doc), "loop.json")


def test_every_rule_has_a_readme_section_and_a_fixture() -> None:
    """Given the CacaoRule enum,
    When the '#### <rule>' headings of playbooks/README.md and the invalid fixtures are listed,
    Then each rule has a section, and a fixture unless it is about unreadable files."""
    readme = (PLAYBOOKS / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#### (cacao-[a-z-]+)$", readme, flags=re.MULTILINE))
    rules = {r.value for r in CacaoRule}
    assert documented == rules
    assert {p.stem for p in INVALID.glob("*.json")} == rules - NO_FIXTURE == set(EXPECTED)
