"""Error codes, their README sections and their fixtures stay in sync."""

from __future__ import annotations

import re

from flows.playbook import ErrorCode
from tests.playbooks.helpers import INVALID, PLAYBOOKS

# Codes that no YAML content can produce: the file itself is missing.
NO_FIXTURE = {"no-file"}


def _documented() -> set[str]:
    readme = (PLAYBOOKS / "README.md").read_text(encoding="utf-8").partition("## Error codes")[2]
    return set(re.findall(r"^### ([a-z-]+)$", readme, flags=re.MULTILINE))


def test_every_code_has_a_readme_section_and_nothing_else() -> None:
    """Given the ErrorCode enum,
    When the '### <code>' headings under 'Error codes' in playbooks/README.md are listed,
    Then they are exactly the codes (so each error's pointer leads somewhere)."""
    assert _documented() == {c.value for c in ErrorCode}


def test_every_code_has_exactly_one_invalid_fixture() -> None:
    """Given the ErrorCode enum,
    When tests/playbooks/invalid/ is listed,
    Then there is one <code>.yaml (or <code>.py) per code (except codes about unreadable
    files)."""
    fixtures = {p.stem for p in [*INVALID.glob("*.yaml"), *INVALID.glob("*.py")]}
    assert fixtures == {c.value for c in ErrorCode} - NO_FIXTURE


def test_codes_are_stable_kebab_case() -> None:
    """Given the codes,
    When their spelling is checked,
    Then each is lowercase kebab-case, usable as a README anchor."""
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", c.value) for c in ErrorCode)
