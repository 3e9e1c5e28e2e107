"""Load playbook YAML: shape by the pydantic schema, then meaning, each issue with its line.

Every problem is a :class:`PlaybookIssue` with a stable code (``playbooks/README.md``
explains each), the file, the 1-based line and the step id; :class:`PlaybookError` carries
all of them, so one ``stanch playbook validate`` run shows everything to fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows.errors import StanchError
from flows.models import Stage
from flows.playbook.cache import unless_unchanged
from flows.playbook.schema import (
    ACTIONS,
    README_URL,
    STAGE_ORDER,
    ActionSpec,
    ErrorCode,
    Playbook,
    Step,
    Steps,
    Trigger,
)
from flows.playbook.templates import (
    CONTEXT_ROOTS,
    Template,
    TemplateSyntax,
    compile_template,
    walk_strings,
)
from flows.yaml_lines import LineLoader, YamlLines

_Loc = tuple[str, ...]
_CODES = frozenset(c.value for c in ErrorCode)
_FIELD_NAMES = frozenset(
    name for model in (Playbook, Trigger, Steps, Step) for name in model.model_fields
)
_TEMPLATED = ("for_each", "when", "label", "hunt", "notify", "message", "manual", "confirm")
_EXPRESSIONS = ("for_each", "when")

# Shapes of credentials that must never sit in a playbook: Slack tokens, AWS keys, GitHub
# tokens, private keys, bearer headers, JWTs, and key: value pairs that name a secret.
_SECRET_PATTERNS = (
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{16,}", re.IGNORECASE),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(
        r"\b(password|passwd|secret|api[_-]?key|token|client[_-]?secret)\s*[:=]\s*\S{6,}",
        re.IGNORECASE,
    ),
)


@dataclass(frozen=True)
class PlaybookIssue:
    """One thing wrong with a playbook file.

    Attributes:
        file: the file as named to the loader (``<inline>`` for text).
        line: 1-based line of the offending key or item; 0 when the file itself is the issue.
        code: an :class:`ErrorCode` value.
        message: what is wrong, in words a SOC lead can act on.
        step: the id of the step concerned, or ``""``.
    """

    file: str
    line: int
    code: str
    message: str
    step: str = ""

    def __str__(self) -> str:
        where = f"step {self.step}: " if self.step else ""
        return f"{self.file}:{self.line}: {self.code}: {where}{self.message} ({self.see})"

    @property
    def see(self) -> str:
        """The README section explaining the code."""
        return f"see {README_URL}#{self.code}"


class PlaybookError(StanchError):
    """A playbook could not be loaded; ``issues`` lists every problem, in file order.

    Attributes:
        issues: every problem found.
        code: the first issue's code.
        file: the first issue's file.
        line: the first issue's line.
        step: the first issue's step id.
    """

    def __init__(self, issues: Sequence[PlaybookIssue]) -> None:
        if not issues:
            raise ValueError("PlaybookError needs at least one issue")
        self.issues = tuple(issues)
        first = self.issues[0]
        self.code = first.code
        self.file = first.file
        self.line = first.line
        self.step = first.step
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True)
class CompiledStep:
    """A validated step with its templates compiled.

    Attributes:
        step: the step as written.
        stage: the stage it belongs to.
        action: the catalogue entry for ``action`` steps, else ``None``.
        templates: compiled templates by field (``args.reason``, ``label``, ``for_each``).
        depends: ``depends_on`` plus every step its templates read through ``steps.<id>``.
        line: the line the step starts on.
    """

    step: Step
    stage: Stage
    action: ActionSpec | None
    templates: dict[str, Template]
    depends: frozenset[str]
    line: int

    @property
    def id(self) -> str:
        """The step id."""
        return self.step.id


@dataclass(frozen=True)
class LoadedPlaybook:
    """A valid playbook, ready for the engine.

    Attributes:
        spec: the validated schema object.
        file: where it was loaded from.
        stages: the compiled steps of each stage, in the order they run.
    """

    spec: Playbook
    file: str
    stages: dict[Stage, tuple[CompiledStep, ...]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The playbook id."""
        return self.spec.id

    @property
    def version(self) -> int:
        """The playbook version."""
        return self.spec.version

    def steps(self) -> list[CompiledStep]:
        """Every step, in run order."""
        return [s for stage in STAGE_ORDER for s in self.stages.get(stage, ())]


# YAML with lines -------------------------------------------------------------------------


class _Issues:
    def __init__(self, file: str, data: Any, lines: YamlLines) -> None:
        self.file = file
        self.data = data
        self.lines = lines
        self.found: list[PlaybookIssue] = []

    def step_at(self, path: _Loc) -> str:
        # ("steps", "contain", "2", ...) names a step: report its id when it has one.
        if len(path) >= 3 and path[0] == "steps":
            try:
                step = self.data["steps"][path[1]][int(path[2])]
            except (KeyError, IndexError, TypeError, ValueError):
                return ""
            if isinstance(step, dict) and isinstance(step.get("id"), str):
                return str(step["id"])
        return ""

    def add(self, path: _Loc, code: ErrorCode | str, message: str, *, line: int = 0) -> None:
        self.found.append(
            PlaybookIssue(
                self.file,
                line or self.lines.line(path),
                str(code),
                message,
                self.step_at(path),
            )
        )


def _read_yaml(text: str, file: str) -> tuple[Any, YamlLines]:
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        # An error at the end of the stream is reported past the last line.
        line = max(1, min(line, len(text.splitlines())))
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlaybookError([PlaybookIssue(file, line, "yaml-syntax", problem)]) from exc
    finally:
        loader.dispose()
    if node is None or not isinstance(data, dict):
        raise PlaybookError(
            [PlaybookIssue(file, 1, "not-a-mapping", "a playbook is a mapping of fields")]
        )
    lines = YamlLines()
    lines.walk(node)
    return data, lines


def _from_pydantic(error: Any, issues: _Issues) -> None:
    path = tuple(str(p) for p in error["loc"] if p != "[key]")
    kind = error["type"]
    if kind in _CODES:
        issues.add(path, kind, error["msg"])
    elif kind == "extra_forbidden" and len(path) == 2 and path[0] == "steps":
        stages = ", ".join(s.value for s in STAGE_ORDER)
        issues.add(path, "unknown-stage", f"{path[1]!r} is not a stage; use {stages}")
    elif kind == "extra_forbidden":
        hint = difflib.get_close_matches(path[-1], _FIELD_NAMES, n=1) if path else []
        suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
        issues.add(path, "unknown-field", f"{'.'.join(path)}: unknown field{suffix}")
    elif kind == "missing":
        issues.add(path, "missing-field", f"{'.'.join(path)}: required field is missing")
    else:
        issues.add(path, "invalid-value", f"{'.'.join(path)}: {error['msg']}")


# Meaning ---------------------------------------------------------------------------------
def _check_secrets(issues: _Issues) -> None:
    for path, text in walk_strings(issues.data):
        if any(p.search(text) for p in _SECRET_PATTERNS):
            issues.add(
                path,
                "secret-in-playbook",
                f"{'.'.join(path)} looks like a credential; credentials live in STANCH_* "
                "settings, never in playbooks",
            )


def _compile(
    issues: _Issues, path: _Loc, source: str, *, allowed: frozenset[str], native: bool
) -> Template | None:
    try:
        template = compile_template(source)
    except TemplateSyntax as exc:
        start = issues.lines.text_lines.get(path, issues.lines.line(path))
        line = start + max(exc.line - 1, 0)
        issues.add(path, "bad-template", f"{path[-1]}: {exc.message}", line=line)
        return None
    if native and not template.native:
        issues.add(
            path,
            "bad-template",
            f"{path[-1]} must be a single {{{{ expression }}}}, e.g. "
            "'{{ incident.hostnames }}'",
        )
        return None
    for root in sorted(template.roots - allowed):
        known = ", ".join(sorted(allowed))
        extra = " (item exists only in steps with for_each)" if root == "item" else ""
        issues.add(path, "unknown-variable", f"{path[-1]}: {root!r} is not one of {known}{extra}")
    return template


def _check_action(issues: _Issues, at: _Loc, stage: Stage, step: Step) -> ActionSpec | None:
    assert step.action is not None
    spec = ACTIONS.get(step.action)
    if spec is None:
        hint = difflib.get_close_matches(step.action, ACTIONS, n=1)
        suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
        issues.add(
            (*at, "action"),
            "unknown-action",
            f"{step.action!r} is not an action stanch can run{suffix}; see the action table",
        )
        return None
    if stage not in spec.stages:
        allowed = ", ".join(s.value for s in STAGE_ORDER if s in spec.stages)
        issues.add(
            (*at, "action"), "wrong-stage", f"{spec.name} belongs in {allowed}, not {stage.value}"
        )
    for name, value in step.args.items():
        param = spec.params.get(name)
        where = (*at, "args", name)
        if param is None:
            hint = difflib.get_close_matches(name, spec.params, n=1)
            known = ", ".join(spec.params) or "no arguments"
            suffix = f" (did you mean {hint[0]!r}?)" if hint else f"; it takes {known}"
            issues.add(where, "unknown-argument", f"{spec.name} has no argument {name!r}{suffix}")
            continue
        if isinstance(value, str) and str in param.types:
            continue
        if isinstance(value, str):
            single = compile_template_or_none(value)
            if single is None or not single.native:
                issues.add(
                    where,
                    "bad-argument-type",
                    f"{name} takes {param.type_name}: write a number, or one "
                    "{{ expression }} that gives one",
                )
            continue
        if not param.accepts(value):
            issues.add(where, "bad-argument-type", f"{name} takes {param.type_name}, not {value!r}")
    for name, param in spec.params.items():
        if param.required and name not in step.args:
            issues.add(
                (*at, "args"),
                "missing-argument",
                f"{spec.name} needs argument {name!r}",
                line=issues.lines.line(at),
            )
    return spec


def compile_template_or_none(source: str) -> Template | None:
    """The compiled template, or ``None`` if it does not parse (reported elsewhere)."""
    try:
        return compile_template(source)
    except TemplateSyntax:
        return None


def _misplaced(issues: _Issues, at: _Loc, step: Step, spec: ActionSpec | None) -> None:
    kind = step.kind
    given = step.model_fields_set
    if kind == "action" and spec is not None and spec.lookup:
        wrong = {"label", "approval", "confirm", "message"}
        why = "a lookup changes nothing"
    elif kind == "action":
        wrong = {"message"}
        why = "message belongs to notify steps"
    elif kind == "notify":
        wrong = {"args", "label", "approval", "confirm"}
        why = "stanch does not execute notify steps"
    else:
        wrong = {"args", "label", "approval", "confirm", "message"}
        why = f"stanch does not execute {kind} steps"
    for name in sorted(given & wrong):
        issues.add((*at, name), "misplaced-field", f"{name} does not apply here: {why}")


def _compile_step(issues: _Issues, at: _Loc, stage: Stage, step: Step) -> CompiledStep | None:
    kinds = [k for k in ("action", "hunt", "notify", "manual") if getattr(step, k) is not None]
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        issues.add(
            at, "step-kind", f"a step has exactly one of action, hunt, notify, manual; got {what}"
        )
        return None
    spec = _check_action(issues, at, stage, step) if step.action is not None else None
    _misplaced(issues, at, step, spec)
    roots = CONTEXT_ROOTS | ({"item"} if step.for_each is not None else set())
    templates: dict[str, Template] = {}
    for name in _TEMPLATED:
        source = getattr(step, name)
        if source is None:
            continue
        allowed = CONTEXT_ROOTS if name == "for_each" else frozenset(roots)
        compiled = _compile(
            issues, (*at, name), source, allowed=allowed, native=name in _EXPRESSIONS
        )
        if compiled is not None:
            templates[name] = compiled
    for arg, value in step.args.items():
        if isinstance(value, str):
            compiled = _compile(
                issues, (*at, "args", arg), value, allowed=frozenset(roots), native=False
            )
            if compiled is not None:
                templates[f"args.{arg}"] = compiled
    referenced = {s for t in templates.values() for s in t.steps}
    return CompiledStep(
        step=step,
        stage=stage,
        action=spec,
        templates=templates,
        depends=frozenset(step.depends_on) | frozenset(referenced),
        line=issues.lines.line(at),
    )


def _order(
    issues: _Issues, stage: Stage, compiled: list[tuple[_Loc, CompiledStep]]
) -> tuple[CompiledStep, ...]:
    """File order, except that a step comes after the same-stage steps it depends on."""
    here = {c.id for _, c in compiled}
    done: list[CompiledStep] = []
    placed: set[str] = set()
    pending = list(compiled)
    while pending:
        for i, (_, step) in enumerate(pending):
            if all(d in placed or d not in here for d in step.depends):
                done.append(step)
                placed.add(step.id)
                del pending[i]
                break
        else:
            names = ", ".join(s.id for _, s in pending)
            for at, _step in pending:
                issues.add(
                    (*at, "depends_on"),
                    "dependency-cycle",
                    f"steps {names} in {stage.value} wait on each other",
                )
            break
    return tuple(done)


def _check_dependencies(
    issues: _Issues, compiled: list[tuple[_Loc, CompiledStep]], stage_of: dict[str, Stage]
) -> None:
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    for at, step in compiled:
        for dep in sorted(step.depends):
            where = (*at, "depends_on") if dep in step.step.depends_on else at
            if dep not in stage_of:
                known = ", ".join(sorted(stage_of))
                issues.add(where, "unknown-dependency", f"no step {dep!r} (steps: {known})")
            elif dep == step.id:
                issues.add(where, "dependency-cycle", f"{dep} depends on itself")
            elif rank[stage_of[dep]] > rank[step.stage]:
                issues.add(
                    where,
                    "later-dependency",
                    f"{dep} runs in {stage_of[dep].value}, after this {step.stage.value} step",
                )


def _moment(value: date) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def _semantics(issues: _Issues, playbook: Playbook, file: str) -> dict[Stage, tuple[Any, ...]]:
    stem = Path(file).stem
    if file != "<inline>" and stem != playbook.id:
        issues.add(
            ("id",), "id-mismatch", f"id is {playbook.id!r} but the file is named {stem}.yaml"
        )
    if (
        playbook.created
        and playbook.modified
        and _moment(playbook.modified) < _moment(playbook.created)
    ):
        issues.add(("modified",), "invalid-value", "modified is earlier than created")
    trigger = playbook.trigger
    if trigger.min_severity > trigger.max_severity:
        issues.add(
            ("trigger", "max_severity"),
            "bad-severity",
            f"max_severity {trigger.max_severity.name.lower()} is below min_severity "
            f"{trigger.min_severity.name.lower()}",
        )
    staged = playbook.steps.by_stage()
    if not any(steps for _, steps in staged):
        issues.add(("steps",), "no-steps", "the playbook has no steps")
    stage_of: dict[str, Stage] = {}
    compiled: dict[Stage, list[tuple[_Loc, CompiledStep]]] = {}
    for stage, steps in staged:
        for i, step in enumerate(steps):
            at = ("steps", stage.value, str(i))
            if step.id in stage_of:
                issues.add((*at, "id"), "duplicate-step", f"step id {step.id!r} is used twice")
            stage_of.setdefault(step.id, stage)
            result = _compile_step(issues, at, stage, step)
            if result is not None:
                compiled.setdefault(stage, []).append((at, result))
    everything = [pair for stage in STAGE_ORDER for pair in compiled.get(stage, [])]
    _check_dependencies(issues, everything, stage_of)
    return {stage: _order(issues, stage, compiled.get(stage, [])) for stage in STAGE_ORDER}


def parse_playbook(text: str, *, file: str = "<inline>") -> LoadedPlaybook:
    """Validate playbook YAML text and compile its templates.

    Args:
        text: the YAML document.
        file: how to name the source in errors; its stem must equal the playbook id.

    Returns:
        The playbook, ready for :func:`flows.playbook.engine.plan_playbook`.

    Raises:
        PlaybookError: with every issue found, each with its line and step.
    """
    data, lines = _read_yaml(text, file)
    issues = _Issues(file, data, lines)
    for path, line in lines.duplicates:
        issues.add(path, "duplicate-key", f"{path[-1]!r} appears twice", line=line)
    _check_secrets(issues)
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            _from_pydantic(error, issues)
        raise PlaybookError(sorted(issues.found, key=lambda i: i.line)) from exc
    stages = _semantics(issues, playbook, file)
    if issues.found:
        raise PlaybookError(sorted(issues.found, key=lambda i: i.line))
    return LoadedPlaybook(spec=playbook, file=file, stages=stages)


def load_playbook(path: Path | str) -> LoadedPlaybook:
    """Load and validate one playbook file (not again while it is unchanged: see
    :func:`flows.playbook.cache.unless_unchanged`).

    Raises:
        PlaybookError: the file cannot be read (``no-file``) or is invalid.
    """
    return unless_unchanged(Path(path), _read_playbook)


def _read_playbook(path: Path) -> LoadedPlaybook:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read playbook: {exc.strerror or exc}"
        raise PlaybookError([PlaybookIssue(str(path), 0, "no-file", reason)]) from exc
    return parse_playbook(text, file=str(path))


def playbook_files(paths: Iterable[Path | str]) -> list[Path]:
    """The ``*.yaml`` files named, directories expanded (not recursively), in name order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found.extend(sorted(path.glob("*.yaml")))
        else:
            found.append(path)
    return found


def load_playbooks(directory: Path | str) -> list[LoadedPlaybook]:
    """Every playbook in ``directory`` (``*.yaml``), in id order.

    Raises:
        PlaybookError: with the issues of every invalid file.
    """
    loaded: list[LoadedPlaybook] = []
    issues: list[PlaybookIssue] = []
    for path in playbook_files([directory]):
        try:
            loaded.append(load_playbook(path))
        except PlaybookError as exc:
            issues.extend(exc.issues)
    if issues:
        raise PlaybookError(issues)
    return sorted(loaded, key=lambda p: p.id)
