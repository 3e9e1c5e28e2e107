"""Playbooks already loaded in this process, kept while their file is unchanged.

Every incident loads the whole library; parsing and compiling a playbook costs about
25 ms, so a file whose modification time, size and inode are those it had when it was
loaded is not read again (a Python playbook is not imported again: what it imports
itself is the interpreter's to cache, as for any module). Only valid playbooks are
kept: an invalid file is read, and its error reported, every time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

_Stamp = tuple[int, int, int]
_LOADED: dict[str, tuple[_Stamp, object]] = {}
_Loaded = TypeVar("_Loaded")


def _stamp(path: Path) -> _Stamp | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def forget_loaded() -> None:
    """Drop every kept playbook, so the next load reads each file again (benchmarks)."""
    _LOADED.clear()


def unless_unchanged(path: Path, load: Callable[[Path], _Loaded]) -> _Loaded:
    """``load(path)``, or what it returned before if the file has not changed since.

    Raises:
        PlaybookError: from ``load``, for an unreadable or invalid file (nothing is kept).
    """
    # Stat before loading: a write in between leaves a newer file than the stamp says,
    # which the next call sees as changed and loads again.
    stamp = _stamp(path)
    key = str(path)
    kept = _LOADED.get(key)
    if stamp is not None and kept is not None and kept[0] == stamp:
        return cast(_Loaded, kept[1])
    loaded = load(path)
    if stamp is not None:
        _LOADED[key] = (stamp, loaded)
    return loaded
