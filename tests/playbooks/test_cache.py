"""The playbook library is read once per file version: unchanged files are not parsed again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flows.playbook import PlaybookError, load_playbooks
from flows.playbook import loader as playbook_loader
from tests.playbooks.helpers import PLAYBOOKS


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    parse = playbook_loader.parse_playbook

    def counting(text: str, *, file: str = "<inline>") -> playbook_loader.LoadedPlaybook:
        parsed.append(Path(file).name)
        return parse(text, file=file)

    monkeypatch.setattr(playbook_loader, "parse_playbook", counting)
    return parsed


def test_an_unchanged_library_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the bundled library copied to a directory and loaded once,
    When the next incident loads it again,
    Then no file is parsed again and the same playbooks come back."""
    library = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, library)
    parsed = _parses(monkeypatch)
    first = load_playbooks(library)
    yaml_files = sorted(p.name for p in library.glob("*.yaml"))
    assert sorted(parsed) == yaml_files and len(yaml_files) >= 6
    again = load_playbooks(library)
    assert sorted(parsed) == yaml_files
    assert [p.id for p in again] == [p.id for p in first]
    assert all(a is b for a, b in zip(again, first, strict=True))


def test_an_edited_playbook_is_loaded_afresh_and_a_broken_one_reported_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a loaded library,
    When a SOC lead bumps a playbook's version, Then the next load has the new version and
    parses only that file; When they then break it, Then every load reports the error with
    its line; When they fix it, Then it loads again."""
    library = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, library)
    load_playbooks(library)
    parsed = _parses(monkeypatch)
    path = library / "ransomware.yaml"
    original = path.read_text(encoding="utf-8")
    version = next(line for line in original.splitlines() if line.startswith("version:"))
    bumped = original.replace(version, f"version: {int(version.split()[1]) + 1}", 1)
    path.write_text(bumped, encoding="utf-8")
    # The same size and, on a coarse clock, the same mtime: set a later one explicitly.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    by_id = {p.id: p for p in load_playbooks(library)}
    assert by_id["ransomware"].version == int(version.split()[1]) + 1
    assert parsed == ["ransomware.yaml"]

    path.write_text(bumped.replace("steps:", "steps: [", 1), encoding="utf-8")
    for _ in range(2):
        with pytest.raises(PlaybookError) as raised:
            load_playbooks(library)
        assert raised.value.file == str(path) and raised.value.line > 1
    path.write_text(original, encoding="utf-8")
    assert {p.id for p in load_playbooks(library)} >= {"ransomware"}
