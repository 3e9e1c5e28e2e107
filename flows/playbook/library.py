"""The playbook library: YAML and Python playbooks found, loaded and planned alike.

``playbooks/<id>.yaml`` goes to the YAML loader, ``playbooks/<id>.py`` to the Python one;
routing, planning, policy, approval and the ledger treat both the same. This module is
what the lifecycle and the CLI call: :func:`load_playbooks`, :func:`plan_playbook`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.models import Incident
from flows.playbook.cache import unless_unchanged
from flows.playbook.engine import Lookup, PlaybookPlan
from flows.playbook.engine import plan_playbook as plan_yaml_playbook
from flows.playbook.loader import LoadedPlaybook, PlaybookError, PlaybookIssue
from flows.playbook.loader import load_playbook as load_yaml_playbook
from flows.playbook.python import PythonPlaybook, load_python_playbook, plan_python_playbook

SUFFIXES = (".yaml", ".py")
"""What a playbook file may end with."""

StageRunner = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""Runs one stage function of a Python playbook (the lifecycle: as a Prefect task)."""


def playbook_files(paths: Iterable[Path | str]) -> list[Path]:
    """The playbook files named, directories expanded (not recursively), in name order.

    In a directory, ``*.yaml`` and ``*.py`` are playbooks, except modules whose name starts
    with ``_`` (helpers a playbook may import).
    """
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith("_")
                )
            )
        else:
            found.append(path)
    return found


def load_playbook(path: Path | str) -> LoadedPlaybook:
    """Load and check one playbook file, YAML or Python (by its suffix).

    Raises:
        PlaybookError: the file is missing or invalid.
    """
    path = Path(path)
    if path.suffix == ".py":
        return unless_unchanged(path, load_python_playbook)
    return load_yaml_playbook(path)


def load_playbooks(directory: Path | str) -> list[LoadedPlaybook]:
    """Every playbook in ``directory`` (``*.yaml`` and ``*.py``), in id order.

    Raises:
        PlaybookError: with the issues of every invalid file, or of two files with one id.
    """
    loaded: list[LoadedPlaybook] = []
    issues: list[PlaybookIssue] = []
    for path in playbook_files([directory]):
        try:
            loaded.append(load_playbook(path))
        except PlaybookError as exc:
            issues.extend(exc.issues)
    by_id: dict[str, LoadedPlaybook] = {}
    for playbook in loaded:
        if playbook.id in by_id:
            issues.append(
                PlaybookIssue(
                    playbook.file,
                    0,
                    "id-mismatch",
                    f"{by_id[playbook.id].file} has the same id {playbook.id!r}",
                )
            )
        by_id.setdefault(playbook.id, playbook)
    if issues:
        raise PlaybookError(issues)
    return sorted(loaded, key=lambda p: p.id)


@dataclass(frozen=True)
class PlaybookLibrary:
    """The playbooks of a directory, each loaded on its own.

    Attributes:
        playbooks: the valid ones, in id order.
        broken: one error per invalid file, naming it: those playbooks are skipped, so
            one bad file does not stop every incident.
    """

    playbooks: tuple[LoadedPlaybook, ...]
    broken: tuple[PlaybookError, ...]


def load_library(directory: Path | str) -> PlaybookLibrary:
    """Every valid playbook in ``directory``; the invalid ones are set aside with their errors.

    What the lifecycle loads at run time: an incident routes among the valid playbooks,
    and the run reports the ones it skipped. A second file with an id already taken is
    set aside too (the first in name order keeps the id).
    """
    loaded: dict[str, LoadedPlaybook] = {}
    broken: list[PlaybookError] = []
    for path in playbook_files([directory]):
        try:
            playbook = load_playbook(path)
        except PlaybookError as exc:
            broken.append(exc)
            continue
        if playbook.id in loaded:
            issue = PlaybookIssue(
                playbook.file,
                0,
                "id-mismatch",
                f"{loaded[playbook.id].file} has the same id {playbook.id!r}",
            )
            broken.append(PlaybookError([issue]))
            continue
        loaded[playbook.id] = playbook
    return PlaybookLibrary(tuple(sorted(loaded.values(), key=lambda p: p.id)), tuple(broken))


async def plan_playbook(
    playbook: LoadedPlaybook,
    incident: Incident,
    lookup: Lookup,
    *,
    confirmed: frozenset[str] | set[str] = frozenset(),
    run_stage: StageRunner | None = None,
) -> PlaybookPlan:
    """What ``playbook`` would do about ``incident``, stage by stage, changing nothing.

    YAML playbooks are planned by :func:`flows.playbook.engine.plan_playbook` (``confirmed``
    names their confirmed ``confirm`` steps); Python playbooks by running their stage
    functions (``run_stage`` decides how each runs).

    Raises:
        PlaybookRunError: a step or stage function failed; the message says where.
    """
    if isinstance(playbook, PythonPlaybook):
        return await plan_python_playbook(playbook, incident, lookup, run_stage=run_stage)
    return await plan_yaml_playbook(playbook, incident, lookup, confirmed=confirmed)
