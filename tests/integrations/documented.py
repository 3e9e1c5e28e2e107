"""Check requests against the vendors' documented operations in ``tests/vendor_specs``.

A (method, path) is documented when some operation in the vendor's list has the same
method and a path template that matches once each ``{placeholder}`` stands for one
path segment. Simulator control routes (``/_sim/...``) are never vendor operations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SPECS = Path(__file__).resolve().parent.parent / "vendor_specs"


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}/?$")


@cache
def operations(*spec_files: str) -> tuple[Operation, ...]:
    """The operations listed in the given JSON spec files (names relative to SPECS)."""
    ops: list[Operation] = []
    for name in spec_files:
        for entry in json.loads((SPECS / name).read_text()):
            template = entry["path"].split("?")[0]
            ops.append(Operation(entry["method"].upper(), template, _compile(template)))
    return tuple(ops)


def explicit(*pairs: tuple[str, str]) -> tuple[Operation, ...]:
    """Operations written out by hand, for vendors documented in prose (PAN-OS, FortiGate)."""
    return tuple(Operation(m.upper(), t, _compile(t)) for m, t in pairs)


def undocumented(
    requests: Iterable[tuple[str, str]], ops: Iterable[Operation]
) -> list[tuple[str, str]]:
    """The (method, path) pairs that match no documented operation."""
    ops = list(ops)
    missing = []
    for method, path in requests:
        if path.startswith("/_sim/"):
            continue
        if not any(op.method == method.upper() and op.pattern.match(path) for op in ops):
            missing.append((method, path))
    return missing
