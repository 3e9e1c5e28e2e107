"""Fuzzed and forged CACAO documents: refused with a CacaoError, never another exception."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.playbook import CacaoError, export_document, import_document, load_playbook
from tests.playbooks.helpers import PLAYBOOKS

HERE = Path(__file__).resolve().parent
SOURCES = {
    "community": json.loads((HERE / "community-ransomware.json").read_text(encoding="utf-8")),
    "openc2": json.loads((HERE / "openc2-readings.json").read_text(encoding="utf-8")),
    "stanch": export_document(load_playbook(PLAYBOOKS / "ransomware.yaml")),
}

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**12) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _paths(inner, (*path, i))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(sorted(SOURCES)), pick=st.integers(min_value=0), new=_json)
def test_a_mutated_document_imports_or_is_refused_cleanly(source: str, pick: int, new: Any) -> None:
    """Given a valid document with one value anywhere replaced by arbitrary JSON,
    When imported,
    Then it imports, or a CacaoError explains why: no other exception escapes."""
    doc = SOURCES[source]
    paths = _paths(doc)
    mutated = _replace(doc, paths[pick % len(paths)], new)
    try:
        import_document(json.dumps(mutated), "fuzzed.json")
    except CacaoError as exc:
        assert exc.issues


@settings(max_examples=80, deadline=None)
@given(content=_json)
def test_any_openc2_content_is_mapped_or_made_manual(content: Any) -> None:
    """Given the bad-mac-address playbook whose command is openc2-http with arbitrary JSON,
    When imported,
    Then it imports (the step executable or manual) or is refused with a CacaoError."""
    doc = json.loads((HERE / "bad-mac-address.json").read_text(encoding="utf-8"))
    action = doc["workflow"]["action--00000000-0000-4000-8000-000000000102"]
    action["commands"] = [
        {
            "type": "openc2-http",
            "command": "POST /.well-known/openc2 HTTP/1.1",
            "content_b64": base64.b64encode(json.dumps(content).encode()).decode(),
        }
    ]
    try:
        import_document(json.dumps(doc), "fuzzed.json")
    except CacaoError as exc:
        assert exc.issues


def test_values_the_schemas_do_not_reach_are_refused_not_crashed_on() -> None:
    """Given keys with prefixes the schemas do not know (a workflow step, an agent) whose
    values are not objects,
    When imported,
    Then a CacaoError points at each of them."""
    doc = json.loads((HERE / "bad-mac-address.json").read_text(encoding="utf-8"))
    doc["workflow"]["bogus--00000000-0000-4000-8000-000000000109"] = 5
    doc["agent_definitions"]["soarca--00000000-0000-4000-8000-000000000110"] = "soarca-ssh"
    try:
        import_document(json.dumps(doc), "odd.json")
    except CacaoError as exc:
        pointers = {i.pointer for i in exc.issues}
    assert "/workflow/bogus--00000000-0000-4000-8000-000000000109" in pointers
    assert "/agent_definitions/soarca--00000000-0000-4000-8000-000000000110" in pointers
