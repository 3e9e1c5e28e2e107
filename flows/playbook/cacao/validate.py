"""Validate a CACAO 2.0 document: JSON, the OASIS schemas (Draft 7), then what they cannot say.

Every problem is a :class:`CacaoIssue` naming the JSON pointer, the rule (a section of
``playbooks/README.md``) and the reason. The schemas check shape only; the semantic rules
here add what a runner needs: a real start, no dangling step, agent or extension reference,
every branch reaching an ``end``, no loop except through a ``while-condition``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from flows.errors import StanchError
from flows.playbook.cacao.mapping import LINKS, STEP_PREFIXES
from flows.playbook.schema import README_URL

_MESSAGE_LIMIT = 240


class CacaoRule(StrEnum):
    """Stable names of the CACAO rules a document can break, each a README section."""

    NO_FILE = "cacao-no-file"
    NOT_JSON = "cacao-json"
    DUPLICATE_ID = "cacao-duplicate-id"
    SCHEMA = "cacao-schema"
    START = "cacao-start"
    STEP_TYPE = "cacao-step-type"
    REFERENCE = "cacao-reference"
    NO_END = "cacao-no-end"
    CYCLE = "cacao-cycle"
    CONTENT = "cacao-content"
    EXTENSION = "cacao-extension"
    MISMATCH = "cacao-mismatch"
    STANCH = "cacao-stanch"


@dataclass(frozen=True)
class CacaoIssue:
    """One thing wrong with a CACAO document.

    Attributes:
        file: the file as named (``-`` for standard input).
        pointer: the RFC 6901 JSON pointer of the offending value (``""``: the document).
        rule: a :class:`CacaoRule` value.
        message: what is wrong and what to do about it.
    """

    file: str
    pointer: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: {self.rule}: {self.message} ({self.see})"

    @property
    def see(self) -> str:
        """The README section explaining the rule."""
        return f"see {README_URL}#{self.rule}"

    def as_json(self) -> dict[str, str]:
        """The issue as a JSON object (for ``--json``)."""
        return {
            "file": self.file,
            "pointer": self.pointer,
            "rule": self.rule,
            "message": self.message,
        }


class CacaoError(StanchError):
    """A CACAO document was refused; ``issues`` lists every problem found.

    Attributes:
        issues: every problem, in document order.
    """

    def __init__(self, issues: Sequence[CacaoIssue]) -> None:
        if not issues:
            raise ValueError("CacaoError needs at least one issue")
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def pointer(*parts: str | int) -> str:
    """The JSON pointer of a path, escaped as RFC 6901 says (``~0``, ``~1``)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


# JSON ------------------------------------------------------------------------------------
def read_json(text: str, file: str) -> Any:
    """Parse JSON, refusing duplicate keys (JSON parsers silently keep the last one).

    Raises:
        CacaoError: not JSON (``cacao-json``) or a key given twice (``cacao-duplicate-id``).
    """
    duplicates: dict[int, list[str]] = {}
    keep: list[dict[str, Any]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.setdefault(id(result), []).append(key)
            result[key] = value
        keep.append(result)  # ids stay valid while the dicts are alive
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except ValueError as exc:
        where = exc if isinstance(exc, json.JSONDecodeError) else None
        reason = (
            f"not JSON: line {where.lineno} column {where.colno}: {where.msg}"
            if where
            else f"not JSON: {exc}"
        )
        raise CacaoError([CacaoIssue(file, "", CacaoRule.NOT_JSON, reason)]) from exc
    if duplicates:
        issues = [
            CacaoIssue(
                file,
                pointer(*path, key),
                CacaoRule.DUPLICATE_ID,
                f"{key!r} is given twice in one object; JSON keeps only the last, which "
                "would silently drop a step or a definition",
            )
            for path, obj in _objects(data)
            for key in duplicates.get(id(obj), [])
        ]
        raise CacaoError(issues)
    return data


def _objects(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        yield path, value
        for key, inner in value.items():
            yield from _objects(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _objects(inner, (*path, i))


# Schemas ---------------------------------------------------------------------------------
@cache
def _validator() -> Draft7Validator:
    root = resources.files("flows.playbook.cacao").joinpath("schemas")
    found: list[tuple[str, Resource[Any]]] = []
    pending = [root]
    playbook: dict[str, Any] = {}
    while pending:
        folder = pending.pop()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                pending.append(entry)
            elif entry.name.endswith(".json"):
                schema = json.loads(entry.read_text(encoding="utf-8"))
                found.append((schema["$id"], Resource.from_contents(schema, DRAFT7)))
                if entry.name == "playbook.json" and folder == root:
                    playbook = schema
    registry: Registry[Any] = Registry().with_resources(found)
    # Draft 7 semantics on purpose: the files also use unevaluatedProperties, which would
    # reject every action step under 2019-09 or later (see schemas/README.md).
    return Draft7Validator(playbook, registry=registry)


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _schema_issue(file: str, error: ValidationError) -> CacaoIssue:
    # anyOf/oneOf failures say only "not valid under any of the given schemas"; the
    # closest sub-error names the field that is actually wrong.
    detail = best_match(error.context) if error.context else error
    path = [*error.absolute_path]
    if detail is not error:
        path += [*detail.path]
    return CacaoIssue(file, pointer(*path), CacaoRule.SCHEMA, _short(detail.message))


def schema_issues(data: Any, file: str) -> list[CacaoIssue]:
    """Every place ``data`` breaks the OASIS CACAO 2.0 schemas, in document order."""
    errors = sorted(_validator().iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [_schema_issue(file, e) for e in errors]


# Meaning ---------------------------------------------------------------------------------
def _successors(step: dict[str, Any]) -> list[tuple[str, str]]:
    """``(property path, step id)`` of every step this one can hand over to."""
    found = [(name, step[name]) for name in LINKS if isinstance(step.get(name), str)]
    found += [(f"next_steps/{i}", s) for i, s in enumerate(step.get("next_steps") or [])]
    cases = step.get("cases")
    if isinstance(cases, dict):
        found += [(pointer("cases", k)[1:], s) for k, s in cases.items() if isinstance(s, str)]
    return found


class _Checks:
    def __init__(self, data: dict[str, Any], file: str) -> None:
        self.data = data
        self.file = file
        self.found: list[CacaoIssue] = []
        # Keys with an unknown prefix escape the schemas, so their value may be anything.
        self.workflow: dict[str, Any] = {}
        for key, step in (data.get("workflow") or {}).items():
            if isinstance(step, dict):
                self.workflow[key] = step
            else:
                self.add(pointer("workflow", key), CacaoRule.STEP_TYPE, "a step is a JSON object")

    def add(self, where: str, rule: CacaoRule, message: str) -> None:
        self.found.append(CacaoIssue(self.file, where, rule, message))

    def step_types(self) -> None:
        for key, step in self.workflow.items():
            prefix, _, rest = key.partition("--")
            kind = step.get("type")
            if prefix not in STEP_PREFIXES or not rest:
                self.add(
                    pointer("workflow", key),
                    CacaoRule.STEP_TYPE,
                    f"{key!r} is not a workflow step id: use <type>--<uuid> with a step type "
                    f"({', '.join(STEP_PREFIXES)})",
                )
            elif prefix != kind:
                self.add(
                    pointer("workflow", key, "type"),
                    CacaoRule.STEP_TYPE,
                    f"the step is a {kind!r} but its id says {prefix!r}",
                )

    def start(self) -> None:
        start = self.data.get("workflow_start")
        if start not in self.workflow:
            self.add(
                "/workflow_start",
                CacaoRule.START,
                f"workflow_start {start!r} is not a step of the workflow",
            )
        elif self.workflow[start].get("type") != "start":
            self.add(
                "/workflow_start",
                CacaoRule.START,
                f"workflow_start names a step of type {self.workflow[start].get('type')!r}; "
                "it must name the start step",
            )

    def _defined(self, where: str, value: Any, table: str, what: str) -> None:
        defined = self.data.get(table) or {}
        if isinstance(value, str) and value not in defined:
            self.add(where, CacaoRule.REFERENCE, f"no {what} {value!r} in {table}")

    def references(self) -> None:
        for key, step in self.workflow.items():
            for prop, target in _successors(step):
                if target not in self.workflow:
                    self.add(
                        pointer("workflow", key) + "/" + prop,
                        CacaoRule.REFERENCE,
                        f"{prop.split('/')[0]} names {target!r}, which is not in the workflow",
                    )
            self._defined(
                pointer("workflow", key, "agent"), step.get("agent"), "agent_definitions", "agent"
            )
            for i, target in enumerate(step.get("targets") or []):
                self._defined(
                    pointer("workflow", key, "targets", i), target, "target_definitions", "target"
                )
            for ext in step.get("step_extensions") or {}:
                self._defined(
                    pointer("workflow", key, "step_extensions", ext),
                    ext,
                    "extension_definitions",
                    "extension",
                )
        exception = self.data.get("workflow_exception")
        if exception is not None and exception not in self.workflow:
            self.add(
                "/workflow_exception",
                CacaoRule.REFERENCE,
                f"workflow_exception names {exception!r}, which is not in the workflow",
            )
        for ext in self.data.get("playbook_extensions") or {}:
            self._defined(
                pointer("playbook_extensions", ext), ext, "extension_definitions", "extension"
            )
        for i, marking in enumerate(self.data.get("markings") or []):
            self._defined(pointer("markings", i), marking, "data_marking_definitions", "marking")
        for table in ("agent_definitions", "target_definitions"):
            for key, entry in (self.data.get(table) or {}).items():
                if not isinstance(entry, dict):
                    self.add(pointer(table, key), CacaoRule.SCHEMA, "a definition is a JSON object")
                    continue
                self._defined(
                    pointer(table, key, "authentication_info"),
                    entry.get("authentication_info"),
                    "authentication_info_definitions",
                    "authentication info",
                )

    def graph(self) -> None:
        start = self.data.get("workflow_start")
        if start not in self.workflow:
            return
        edges = {
            key: [s for _, s in _successors(step) if s in self.workflow]
            for key, step in self.workflow.items()
        }
        reachable: list[str] = []
        seen = {start}
        todo = [start]
        while todo:
            key = todo.pop()
            reachable.append(key)
            for nxt in edges[key]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for key in sorted(reachable):
            # A dangling reference is reported as such, not as a missing end.
            nexts = [s for _, s in _successors(self.workflow[key])]
            self._ends(key, self.workflow[key], nexts)
        self._cycles(sorted(seen), edges)

    def _ends(self, key: str, step: dict[str, Any], nexts: list[str]) -> None:
        kind = step.get("type")
        where = pointer("workflow", key)
        if kind == "end":
            return
        if not nexts:
            self.add(
                where,
                CacaoRule.NO_END,
                f"this {kind} step leads nowhere: end every branch with an end step",
            )
        elif kind == "if-condition" and not {"on_false", "on_completion"} & step.keys():
            self.add(
                where,
                CacaoRule.NO_END,
                "when the condition is false nothing follows: add on_false or on_completion",
            )
        elif kind == "while-condition" and "on_completion" not in step:
            self.add(
                where, CacaoRule.NO_END, "when the loop ends nothing follows: add on_completion"
            )
        elif (
            kind == "switch-condition"
            and "on_completion" not in step
            and "default" not in (step.get("cases") or {})
        ):
            self.add(
                where,
                CacaoRule.NO_END,
                "when no case matches nothing follows: add on_completion or a default case",
            )

    def _cycles(self, nodes: list[str], edges: dict[str, list[str]]) -> None:
        for component in _strongly_connected(nodes, edges):
            looped = len(component) > 1 or component[0] in edges[component[0]]
            loops = [k for k in component if self.workflow[k].get("type") == "while-condition"]
            if looped and not loops:
                names = ", ".join(sorted(component))
                self.add(
                    pointer("workflow", sorted(component)[0]),
                    CacaoRule.CYCLE,
                    f"steps {names} lead back to each other; only a while-condition may loop",
                )

    def content(self) -> None:
        for key, step in self.workflow.items():
            for i, command in enumerate(step.get("commands") or []):
                for field in ("content_b64", "command_b64"):
                    if field in command:
                        where = pointer("workflow", key, "commands", i, field)
                        decoded = _base64(command[field])
                        if decoded is None:
                            self.add(where, CacaoRule.CONTENT, f"{field} is not base64")
                        elif command.get("type") == "openc2-http" and field == "content_b64":
                            self._openc2(where, decoded)

    def _openc2(self, where: str, decoded: bytes) -> None:
        try:
            body = json.loads(decoded)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.add(
                where,
                CacaoRule.CONTENT,
                "content_b64 of an openc2-http command must be an OpenC2 message in JSON",
            )


def _base64(text: Any) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        return None


def decode_base64(text: str) -> bytes:
    """The bytes of a base64 field (checked by :func:`semantic_issues` first)."""
    decoded = _base64(text)
    if decoded is None:
        raise ValueError("not base64")
    return decoded


def _strongly_connected(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (a hostile document may be deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = [s for s in edges[node] if s in edges]
            if i < len(successors):
                work.append((node, i + 1))
                nxt = successors[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def semantic_issues(data: dict[str, Any], file: str) -> list[CacaoIssue]:
    """What a schema-valid document still gets wrong, in a stable order."""
    checks = _Checks(data, file)
    checks.step_types()
    checks.start()
    checks.references()
    checks.content()
    checks.graph()
    return checks.found


def check_document(text: str, file: str) -> dict[str, Any]:
    """Parse and validate one CACAO document.

    Args:
        text: the JSON text.
        file: how to name it in issues.

    Returns:
        The document, valid against the schemas and the semantic rules.

    Raises:
        CacaoError: with every issue found (schema issues first: the semantic rules need
            the shape to hold).
    """
    data = read_json(text, file)
    issues = schema_issues(data, file)
    if not issues:
        issues = semantic_issues(data, file)
    if issues:
        raise CacaoError(issues)
    assert isinstance(data, dict)
    return data
