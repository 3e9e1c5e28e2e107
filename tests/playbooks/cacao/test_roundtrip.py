"""Export → import gives the same playbook: same plans (same hashes) for every example alert."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.playbook import (
    LoadedPlaybook,
    PlaybookPlan,
    PythonPlaybook,
    export_document,
    export_text,
    import_document,
    load_playbooks,
    plan_playbook,
)
from stanch.playbook_cli import app, incident_of, lab_lookup, read_alerts
from tests.playbooks.helpers import PLAYBOOKS, REPO

# CACAO carries YAML playbooks; a Python playbook's steps are code (refused, see below).
LIBRARY = [p for p in load_playbooks(PLAYBOOKS) if not isinstance(p, PythonPlaybook)]
CASES = [
    (playbook, case)
    for playbook in LIBRARY
    for case in yaml.safe_load(
        (PLAYBOOKS / "examples" / playbook.id / "expected.yaml").read_text(encoding="utf-8")
    )["cases"]
]
LAYOUT = "extension-definition--00000000-0000-4000-8000-000000000900"


async def _plans(playbooks: list[LoadedPlaybook], case: dict[str, Any]) -> list[PlaybookPlan]:
    """Each playbook planned for the case against one lab (host ids are per lab)."""
    folder = PLAYBOOKS / "examples" / playbooks[0].id
    incident = incident_of(read_alerts([folder / name for name in case["alerts"]]))
    confirmed = set(case.get("confirmed", ()))
    async with lab_lookup(incident, absent=case.get("absent", ())) as lookup:
        return [await plan_playbook(p, incident, lookup, confirmed=confirmed) for p in playbooks]


def _signature(plan: PlaybookPlan) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    return (
        [(a.step, a.approval, a.plan.sha256) for a in plan.actions],
        [(n.step, n.status) for n in plan.notes],
    )


@pytest.mark.parametrize(("playbook", "case"), CASES, ids=[f"{p.id}:{c['name']}" for p, c in CASES])
async def test_imported_export_plans_exactly_like_the_original(
    playbook: LoadedPlaybook, case: dict[str, Any]
) -> None:
    """Given a library playbook and one of its example cases,
    When the playbook is exported to CACAO and imported back,
    Then the imported playbook plans the same actions with the same plan hashes and
    approvals, and the same notes, as the original."""
    imported = import_document(export_text(export_document(playbook)), "export.json")
    assert not imported.foreign
    original, again = await _plans([playbook, imported.playbook], case)
    expected = case.get("plans") or {}
    assert bool(original.actions) == bool(expected.get("contain") or expected.get("remediate"))
    assert _signature(again) == _signature(original)
    assert imported.playbook.spec == playbook.spec


@pytest.mark.parametrize("playbook", LIBRARY, ids=lambda p: p.id)
def test_re_export_of_an_import_is_byte_identical(playbook: LoadedPlaybook) -> None:
    """Given a library playbook's export,
    When it is imported and exported again,
    Then the text is byte-identical."""
    text = export_text(export_document(playbook))
    assert export_text(export_document(import_document(text, "x.json").playbook)) == text


def test_export_piped_into_import_reproduces_the_ransomware_plans(tmp_path: Path) -> None:
    """Given the real CLI,
    When `stanch playbook export ransomware --format cacao | stanch playbook import - -o DIR`
    runs in a shell,
    Then DIR/ransomware.yaml is written, and with it in place of the original,
    `stanch playbook test` passes every case of the library."""
    stanch = Path(sys.executable).parent / "stanch"
    out = tmp_path / "imported"
    pipeline = (
        f"{stanch} playbook export ransomware --format cacao | {stanch} playbook import - -o {out}"
    )
    done = subprocess.run(["/bin/sh", "-c", pipeline], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "as ransomware ->" in done.stdout
    library = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, library)
    shutil.copy(out / "ransomware.yaml", library / "ransomware.yaml")
    result = app(["test", "--playbooks", str(library)], result_action="return_value")
    assert result == 0


def test_other_tools_extensions_survive_on_a_stanch_export(tmp_path: Path) -> None:
    """Given a stanch export that another editor annotated (a layout extension on the
    playbook, on an action step and on the start step),
    When it is imported and exported again,
    Then the annotations are all still there and the stanch playbook is unchanged."""
    [c2] = [p for p in LIBRARY if p.id == "c2-beacon"]
    doc = export_document(c2)
    doc["extension_definitions"][LAYOUT] = {
        "type": "extension-definition",
        "name": "Editor layout",
        "created_by": "identity--00000000-0000-4000-8000-000000000a02",
        "schema": "x and y of each step",
        "version": "1.0.0",
    }
    doc["playbook_extensions"][LAYOUT] = {"zoom": 2}
    start = doc["workflow_start"]
    doc["workflow"][start]["step_extensions"] = {LAYOUT: {"x": 0, "y": 0}}
    [action] = [k for k, s in doc["workflow"].items() if s.get("name") == "block_c2"]
    doc["workflow"][action]["step_extensions"][LAYOUT] = {"x": 10, "y": 20}
    doc["labels"] = ["shared-with-isac"]
    imported = import_document(json.dumps(doc), "annotated.json")
    again = export_document(imported.playbook)
    assert again["playbook_extensions"][LAYOUT] == {"zoom": 2}
    assert again["workflow"][start]["step_extensions"] == {LAYOUT: {"x": 0, "y": 0}}
    assert again["workflow"][action]["step_extensions"][LAYOUT] == {"x": 10, "y": 20}
    assert again["labels"] == ["shared-with-isac"]
    assert again == doc
    without = imported.playbook.spec.model_copy(update={"cacao": None})
    assert without.model_dump(exclude={"steps"}) == c2.spec.model_dump(exclude={"steps"})


def test_the_imported_yaml_validates_and_names_its_source(tmp_path: Path) -> None:
    """Given the ransomware export imported to a file name of its own,
    When the file is validated by the CLI,
    Then it is valid, its id is the file's stem, and its header names the CACAO id."""
    [ransomware] = [p for p in LIBRARY if p.id == "ransomware"]
    source = tmp_path / "ransomware.json"
    source.write_text(export_text(export_document(ransomware)), encoding="utf-8")
    target = tmp_path / "ransomware-copy.yaml"
    assert app(["import", str(source), "-o", str(target)], result_action="return_value") == 0
    assert app(["validate", str(target)], result_action="return_value") == 0
    text = target.read_text(encoding="utf-8")
    assert "\nid: ransomware-copy\n" in text
    assert text.startswith("# Imported from the CACAO 2.0 document playbook--")
