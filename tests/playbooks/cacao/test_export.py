"""CACAO export: every library playbook is a valid, deterministic CACAO 2.0 document."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from flows.playbook import (
    PlaybookError,
    PythonPlaybook,
    export_document,
    export_text,
    load_playbook,
    load_playbooks,
    parse_playbook,
)
from tests.playbooks.helpers import PLAYBOOKS, REPO

SCHEMAS = REPO / "flows" / "playbook" / "cacao" / "schemas"
# CACAO carries YAML playbooks; a Python playbook's steps are code (refused, see below).
LIBRARY = [p for p in load_playbooks(PLAYBOOKS) if not isinstance(p, PythonPlaybook)]


def _oasis_validator() -> Draft7Validator:
    """The shipped OASIS schemas, loaded here independently of stanch's own validator."""
    resources = []
    for path in sorted(SCHEMAS.rglob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        resources.append((schema["$id"], Resource.from_contents(schema, DRAFT7)))
    root = json.loads((SCHEMAS / "playbook.json").read_text(encoding="utf-8"))
    return Draft7Validator(root, registry=Registry().with_resources(resources))


OASIS = _oasis_validator()


def _commands(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for step in doc["workflow"].values() for c in step.get("commands", [])]


def _openc2(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    [step] = [
        s
        for s in doc["workflow"].values()
        if any(e.get("step_id") == step_id for e in s.get("step_extensions", {}).values())
    ]
    [command] = step["commands"]
    assert command["type"] == "openc2-http"
    decoded: dict[str, Any] = json.loads(base64.b64decode(command["content_b64"]))
    return decoded


@pytest.mark.parametrize("playbook", LIBRARY, ids=lambda p: p.id)
def test_every_library_playbook_exports_valid_against_the_oasis_schemas(playbook: Any) -> None:
    """Given a library playbook,
    When exported,
    Then the document is valid against the OASIS CACAO 2.0 schemas (Draft 7), says
    cacao-2.0, and every playbook activity it lists is reflected in a command."""
    doc = export_document(playbook)
    errors = [e.message for e in OASIS.iter_errors(doc)]
    assert errors == []
    assert doc["spec_version"] == "cacao-2.0" and doc["type"] == "playbook"
    used = {c.get("playbook_activity") for c in _commands(doc)}
    assert set(doc.get("playbook_activities", [])) <= used


@pytest.mark.parametrize("playbook", LIBRARY, ids=lambda p: p.id)
def test_export_is_deterministic_with_uuid5_ids(playbook: Any) -> None:
    """Given a library playbook,
    When it is loaded and exported twice,
    Then the two texts are byte-identical and every id in the document is a UUIDv5."""
    first = export_text(export_document(load_playbook(playbook.file)))
    second = export_text(export_document(load_playbook(playbook.file)))
    assert first == second
    doc = json.loads(first)
    ids = [doc["id"], doc["workflow_start"], *doc["workflow"], *doc["agent_definitions"]]
    assert all(uuid.UUID(i.split("--")[1]).version == 5 for i in ids)


def test_dates_come_from_the_playbook_not_the_clock() -> None:
    """Given the ransomware playbook with a later modified date,
    When exported,
    Then created and modified are those of the file (to the millisecond, UTC)."""
    text = (PLAYBOOKS / "ransomware.yaml").read_text(encoding="utf-8")
    later = re.sub(r"(?m)^modified: \S+", "modified: 2027-01-02", text)
    doc = export_document(parse_playbook(later))
    assert doc["created"] == "2026-11-21T07:10:09.000Z"
    assert doc["modified"] == "2027-01-02T00:00:00.000Z"


def test_a_playbook_without_dates_cannot_be_exported(tmp_path: Path) -> None:
    """Given a playbook with no created/modified dates,
    When exported,
    Then a missing-field error says which dates CACAO needs."""
    text = (PLAYBOOKS / "c2-beacon.yaml").read_text(encoding="utf-8")
    undated = "".join(
        line for line in text.splitlines(True) if not line.startswith(("created", "modified"))
    )
    path = tmp_path / "c2-beacon.yaml"
    path.write_text(undated, encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        export_document(load_playbook(path))
    assert caught.value.code == "missing-field"
    assert "created and modified" in str(caught.value)


def test_actions_with_an_openc2_word_are_openc2_commands() -> None:
    """Given the ransomware playbook,
    When exported,
    Then isolation is OpenC2 contain device, the C2 block is deny ipv4_net for 86 400 000 ms,
    the hash block is deny file by SHA-256, the host release is allow device; identity
    verbs keep their stanch identity (a stanch command and the extension)."""
    doc = export_document(LIBRARY[[p.id for p in LIBRARY].index("ransomware")])
    assert _openc2(doc, "isolate_hosts") == {
        "action": "contain",
        "target": {"device": {"device_id": "__item_id__:value"}},
    }
    assert _openc2(doc, "block_c2") == {
        "action": "deny",
        "target": {"ipv4_net": "__item__:value"},
        "args": {"duration": 86_400_000},
    }
    assert _openc2(doc, "block_hash")["target"] == {
        "file": {"hashes": {"sha256": "__item__:value"}}
    }
    assert _openc2(doc, "release_hosts")["action"] == "allow"
    suspend = [
        c for c in _commands(doc) if c.get("command", "").startswith("identity.suspend_user")
    ]
    assert suspend and suspend[0]["type"] == "stanch"


def test_when_is_an_if_condition_that_keeps_the_expression() -> None:
    """Given compromised-account, whose block_signin_ip runs only at high severity,
    When exported,
    Then an if-condition keeps the expression and leads to the step, and the steps that do
    not depend on each other sit under parallel steps."""
    doc = export_document(LIBRARY[[p.id for p in LIBRARY].index("compromised-account")])
    [condition] = [s for s in doc["workflow"].values() if s["type"] == "if-condition"]
    assert condition["condition"] == "{{ incident.severity_id >= 4 }}"
    target = doc["workflow"][condition["on_true"]]
    assert target["name"] == "block_signin_ip"
    assert any(s["type"] == "parallel" for s in doc["workflow"].values())
    assert doc["playbook_types"] == ["investigation", "mitigation", "remediation", "notification"]


def test_a_python_playbook_is_refused_naming_why() -> None:
    """Given the library's Python playbook,
    When it is exported,
    Then export refuses it: its steps are code, which CACAO cannot carry."""
    [python] = [p for p in load_playbooks(PLAYBOOKS) if isinstance(p, PythonPlaybook)]
    with pytest.raises(PlaybookError) as caught:
        export_document(python)
    assert "steps are code" in str(caught.value)
