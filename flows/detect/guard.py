"""Limits an alert payload must meet before anything recursive or typed touches it.

Checked without recursion: nesting depth, the size of one item, integers that fit a
64-bit column, finite numbers, and strings that are valid Unicode (no lone surrogates,
which JSON escapes can carry but UTF-8 cannot encode). :func:`split_batch` cuts a request
body into its items first, so that one item nested too deep for the JSON parser is
rejected alone and its neighbours are still read.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32
"""Objects and arrays inside one alert, at most (vendor alerts nest well under 12)."""
MAX_ITEM_BYTES = 1024 * 1024
"""One alert's JSON text, at most."""
MAX_STRING_CHARS = 256 * 1024
"""One string (key or value), at most."""
_INT64 = (-(2**63), 2**63 - 1)

# A JSON string (escapes and all) or a structural character. Strings are matched whole,
# so brackets inside them do not count.
_MARK = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Rejected:
    """An item refused before normalisation: where, why, and its text as received."""

    field: str
    reason: str
    raw: bytes


class _NonFinite:
    """What ``NaN``, ``Infinity`` and ``-Infinity`` parse to: Python accepts them, JSON not."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class BodyRejected(Exception):
    """The body as a whole is not UTF-8 JSON; nothing in it can be read as an item."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return (out or "(root)")[:300]


def check_payload(payload: Any, *, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first ``(field, reason)`` by which ``payload`` breaks the limits, else ``None``.

    Iterative, so a payload nested a million deep costs memory, never the stack.
    """
    stack: list[tuple[Any, list[str | int]]] = [(payload, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if len(path) >= max_depth:
                return _path(path), f"nested deeper than {max_depth} levels"
            for key, item in value.items():
                if not isinstance(key, str):
                    return _path(path), "object keys must be strings"
                problem = _string_problem(key)
                if problem:
                    return _path([*path, key[:60]]), f"key {problem}"
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            if len(path) >= max_depth:
                return _path(path), f"nested deeper than {max_depth} levels"
            stack.extend((item, [*path, i]) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _string_problem(value)
            if problem:
                return _path(path), problem
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                return _path(path), "integer out of the 64-bit range"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return _path(path), "number out of range (not finite)"
        elif isinstance(value, _NonFinite):
            return _path(path), f"{value.name} is not JSON"
        else:
            return _path(path), f"{type(value).__name__} is not a JSON value"
    return None


def _string_problem(text: str) -> str | None:
    if len(text) > MAX_STRING_CHARS:
        return f"longer than {MAX_STRING_CHARS} characters"
    if _SURROGATE.search(text):
        return "holds a lone UTF-16 surrogate (not valid Unicode)"
    return None


def _non_finite(name: str) -> _NonFinite:
    return _NonFinite(name)


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_non_finite)


def split_batch(body: bytes, *, max_depth: int = MAX_DEPTH) -> tuple[list[Any], bool]:
    """The items of a request body (one object or an array), each parsed or :class:`Rejected`.

    Returns:
        The items, and whether the body was an array.

    Raises:
        BodyRejected: the body is not UTF-8, not JSON, or empty.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRejected("(body)", f"not valid UTF-8 at byte {exc.start}") from exc
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise BodyRejected("(json)", "empty body")
    array = text[start] == "["
    spans, deep = _spans(text, start, array, max_depth)
    if not deep:
        try:
            data = _loads(text)
        except (ValueError, RecursionError) as exc:
            raise BodyRejected("(json)", _json_reason(exc)) from exc
        items = data if array else [data]
    else:
        # Parse what the parser can take: each too-deep item stands in as null.
        pieces: list[str] = []
        last = 0
        for first, end in (spans[i] for i in deep):
            pieces += [text[last:first], "null"]
            last = end
        pieces.append(text[last:])
        try:
            data = _loads("".join(pieces))
        except (ValueError, RecursionError) as exc:
            raise BodyRejected("(json)", _json_reason(exc)) from exc
        items = data if array else [data]
        for i, where in deep.items():
            first, end = spans[i]
            items[i] = Rejected(
                _deep_path(text, first, where),
                f"nested deeper than {max_depth} levels",
                text[first:end].encode("utf-8"),
            )
    for i, item in enumerate(items):
        if isinstance(item, Rejected):
            continue
        first, end = spans[i] if i < len(spans) else (0, len(text))
        raw = text[first:end].encode("utf-8")
        if len(raw) > MAX_ITEM_BYTES:
            items[i] = Rejected("(root)", f"alert larger than {MAX_ITEM_BYTES} bytes", raw)
        elif (problem := check_payload(item, max_depth=max_depth)) is not None:
            items[i] = Rejected(problem[0], problem[1], raw)
    return items, array


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "malformed JSON: nested too deep"
    return f"malformed JSON: {exc}"


def _spans(
    text: str, start: int, array: bool, max_depth: int
) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """Each item's ``(start, end)`` and, for items too deep, where the limit was passed.

    For a non-array body the one item is the whole text. Malformed structure is left for
    the JSON parser to report.
    """
    spans: list[tuple[int, int]] = []
    deep: dict[int, int] = {}
    depth = 0
    item_start = start + 1 if array else start
    # An item's own depth: the array around the items does not count.
    base = 1 if array else 0
    for match in _MARK.finditer(text, start):
        mark = match.group()
        if mark in "[{":
            depth += 1
            if depth - base > max_depth and len(spans) not in deep:
                deep[len(spans)] = match.start()
        elif mark in "]}":
            if array and depth == 1:
                if text[item_start : match.start()].strip():
                    spans.append((item_start, match.start()))
                depth = 0
                break
            depth -= 1
        elif mark == "," and array and depth == 1:
            spans.append((item_start, match.start()))
            item_start = match.end()
    if not array:
        spans = [(start, len(text))]
    # Only items fully found can be cut out; anything else is malformed JSON anyway.
    return spans, {i: at for i, at in deep.items() if i < len(spans)}


def _deep_path(text: str, start: int, where: int) -> str:
    """The dotted path to the point ``where`` at which an item passed the depth limit."""
    path: list[str | int] = []
    pending: str | None = None
    for match in _MARK.finditer(text, start, where + 1):
        mark = match.group()
        if mark[0] == '"':
            pending = mark
            continue
        if mark == ":" and pending is not None and path:
            try:
                path[-1] = json.loads(pending)[:60]
            except ValueError:
                path[-1] = "?"
        elif mark == "[":
            path.append(0)
        elif mark == "{":
            path.append("")
        elif mark in "]}":
            if path:
                path.pop()
        elif mark == "," and path and isinstance(path[-1], int):
            path[-1] += 1
        pending = None
    # The last open bracket is the one past the limit; name its container.
    return _path([p for p in path[:-1] if p != ""])


__all__ = [
    "MAX_DEPTH",
    "MAX_ITEM_BYTES",
    "BodyRejected",
    "Rejected",
    "check_payload",
    "split_batch",
]
