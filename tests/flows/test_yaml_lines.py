"""Line numbers for SOC-authored YAML: libyaml's parser, the same lines as PyYAML's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.yaml_lines import LineLoader, YamlLines

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    p
    for folder in ("playbooks", "policies", "tests/playbooks", "tests/flows/policies")
    for p in (ROOT / folder).rglob("*.yaml")
)


def _lines(loader: type[Any], text: str) -> tuple[Any, ...]:
    parser = loader(text)
    try:
        node = parser.get_single_node()
        data = parser.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = exc.problem_mark  # type: ignore[attr-defined]
        return ("error", mark.line if mark is not None else None)
    finally:
        parser.dispose()
    lines = YamlLines()
    if node is not None:
        lines.walk(node)
    return (data, lines.lines, lines.text_lines, lines.duplicates)


def test_the_fast_parser_is_used_where_pyyaml_has_libyaml() -> None:
    """Given PyYAML built with libyaml (the wheels are), Then documents are composed by
    ``CSafeLoader``, about ten times faster than the pure-Python ``SafeLoader``."""
    assert yaml.__with_libyaml__
    assert LineLoader is yaml.CSafeLoader


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_line_and_duplicate_is_where_the_pure_python_parser_puts_it(path: Path) -> None:
    """Given every playbook and policy file in the repository, valid and invalid fixtures,
    When composed by the fast parser and by PyYAML's pure-Python one,
    Then the data, the line of every key and item, where each text starts, the keys given
    twice and the line of a syntax error are the same: error messages keep their lines."""
    text = path.read_text(encoding="utf-8")
    assert _lines(LineLoader, text) == _lines(yaml.SafeLoader, text)
