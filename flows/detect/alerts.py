"""Load OCSF Detection Findings from JSON, rejecting bad ones with the field and line.

A payload that fails validation raises :class:`~flows.errors.AlertRejected` naming the
first failing field (as a dotted path) and, for a file, the line it is on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.errors import AlertRejected
from integrations.ocsf import DetectionFinding


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _line_of(text: str, loc: tuple[int | str, ...], start: int = 0) -> int | None:
    # JSON parsers keep no positions; find the keys of the path in order instead, which
    # is exact for the usual one-key-per-line alert files and close otherwise.
    position = start
    found = None
    for part in loc:
        if isinstance(part, int):
            continue
        match = re.compile(rf'"{re.escape(part)}"\s*:').search(text, position)
        if match is None:
            break
        position, found = match.end(), match.start()
    return None if found is None else text.count("\n", 0, found) + 1


def parse_finding(
    payload: Any,
    *,
    source: str = "alert",
    text: str | None = None,
    start: int = 0,
    item: int | None = None,
) -> DetectionFinding:
    """Validate one payload as a Detection Finding.

    ``text`` (the file's contents), ``start`` (where this payload begins in it) and
    ``item`` (its index in an array) let the error name the line and the element.

    Raises:
        AlertRejected: with the dotted path of the first failing field.
    """
    try:
        return DetectionFinding.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _dotted(((item,) if item is not None else ()) + tuple(first["loc"]))
        where = source
        # A missing field has no line of its own: point at the object that lacks it.
        located = first["loc"][:-1] if first["type"] == "missing" else first["loc"]
        line = _line_of(text, tuple(located), start) if text else None
        if line is not None:
            where = f"{source}:{line}"
        raise AlertRejected(field, first["msg"], source=where) from exc


def load_alert_file(path: Path) -> list[DetectionFinding]:
    """Read one finding (an object) or several (an array) from a JSON file."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AlertRejected("(json)", exc.msg, source=f"{path}:{exc.lineno}") from exc
    if not isinstance(data, list):
        return [parse_finding(data, source=str(path), text=text)]
    if not data:
        raise AlertRejected("(root)", "the file holds no alert", source=str(path))
    starts = _item_offsets(text)
    return [
        parse_finding(item, source=str(path), text=text, start=starts[i], item=i)
        for i, item in enumerate(data)
    ]


def _item_offsets(text: str) -> list[int]:
    """Character offsets at which each element of a top-level JSON array starts."""
    decoder = json.JSONDecoder()
    offsets: list[int] = []
    position = text.index("[") + 1
    while True:
        while text[position] in " \t\r\n,":
            position += 1
        if text[position] == "]":
            return offsets
        offsets.append(position)
        _, position = decoder.raw_decode(text, position)
