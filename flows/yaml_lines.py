"""Line numbers for YAML that SOC leads write, so every error can say where it is.

PyYAML's composed node tree keeps each node's position; :class:`YamlLines` walks it once
and records the line of every key and list item, where a scalar's text starts, and keys
given twice (PyYAML silently keeps the last, which would drop a rule or a step).
:data:`LineLoader` parses with libyaml where PyYAML was built with it.
"""

from __future__ import annotations

import yaml

LineLoader: type[yaml.SafeLoader | yaml.CSafeLoader] = (
    yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
)
"""The safe loader to compose documents with: libyaml's ``CSafeLoader`` when PyYAML has
it (about ten times faster than the pure-Python parser, and its nodes keep the same line
marks), else ``SafeLoader``. Its syntax errors carry the same line, in libyaml's words."""

Path = tuple[str, ...]
"""A location in the document: mapping keys and list indexes, as strings."""


class YamlLines:
    """Where each key and list item of a YAML document starts (1-based lines)."""

    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.text_lines: dict[Path, int] = {}
        self.duplicates: list[tuple[Path, int]] = []

    def walk(self, node: yaml.Node, path: Path = ()) -> None:
        """Record the positions under ``node``, which sits at ``path``."""
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                here = (*path, name)
                if name in seen:
                    self.duplicates.append((here, key.start_mark.line + 1))
                seen.add(name)
                self.lines[here] = key.start_mark.line + 1
                if isinstance(value, yaml.ScalarNode):
                    # A block scalar's text starts on the line after its | or > indicator.
                    block = value.style in ("|", ">")
                    self.text_lines[here] = value.start_mark.line + 1 + int(block)
                self.walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                here = (*path, str(i))
                self.lines[here] = item.start_mark.line + 1
                self.walk(item, here)

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)
