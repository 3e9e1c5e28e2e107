"""Python playbooks: a SOC lead's module that plans with code, on the same engine as YAML.

A module in the playbooks directory declares its metadata with :func:`define_playbook`
and one async function per stage. Each function is handed a :class:`StageContext` whose
capabilities answer read-only lookups only (``ctx.edr.find_host``); it returns the plans
it wants (``ctx.plan("edr.contain_host", host_id=…)``). It never acts itself: the plans go
through the tenant's rules of engagement, the plan-hash-bound approval and the ledger,
exactly as a YAML playbook's do.

The read-only views are a guarantee of this API, not a sandbox: a module is code the SOC
lead deploys, and code review is what keeps it from importing an HTTP client of its own.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Literal

from pydantic import ValidationError

from flows.models import ActionPlan, Incident, Stage
from flows.playbook.engine import (
    Lookup,
    PlannedAction,
    PlaybookPlan,
    PlaybookRunError,
    StepNote,
)
from flows.playbook.loader import LoadedPlaybook, PlaybookError, PlaybookIssue
from flows.playbook.schema import ACTIONS, STAGE_ORDER, ErrorCode, Playbook, Steps
from flows.playbook.templates import build_context
from integrations.capabilities import Capability

StageFunction = Callable[["StageContext"], Awaitable[Iterable[PlannedAction] | None]]
"""``async def contain(ctx: StageContext) -> list[PlannedAction]``."""

_STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # as a YAML step id


class PlaybookCode:
    """A Python playbook as its module declares it: metadata and stage functions.

    Made by :func:`define_playbook`; its decorators register one function per stage::

        book = define_playbook(id="phishing-click", version=1, ...)

        @book.contain
        async def contain(ctx: StageContext) -> list[PlannedAction]: ...

    Attributes:
        metadata: the keyword arguments given to :func:`define_playbook`, as given.
        line: the line of the :func:`define_playbook` call in its module.
        stages: the registered function of each stage.
    """

    def __init__(self, metadata: Mapping[str, Any], line: int) -> None:
        self.metadata = dict(metadata)
        self.line = line
        self.stages: dict[Stage, StageFunction] = {}
        self.problems: list[tuple[int, str]] = []

    def _register(self, stage: Stage) -> Callable[[StageFunction], StageFunction]:
        def register(function: StageFunction) -> StageFunction:
            line = _line_of(function)
            if not inspect.iscoroutinefunction(function):
                self.problems.append((line, f"{function.__name__} must be an async def"))
            elif len(inspect.signature(function).parameters) != 1:
                self.problems.append(
                    (line, f"{function.__name__} must take exactly one argument, the context")
                )
            elif stage in self.stages:
                self.problems.append((line, f"a second function for the {stage.value} stage"))
            else:
                self.stages[stage] = function
            return function

        return register

    @property
    def investigate(self) -> Callable[[StageFunction], StageFunction]:
        """Decorator: the investigate stage's function (lookups; returns no plans)."""
        return self._register(Stage.INVESTIGATE)

    @property
    def contain(self) -> Callable[[StageFunction], StageFunction]:
        """Decorator: the contain stage's function."""
        return self._register(Stage.CONTAIN)

    @property
    def remediate(self) -> Callable[[StageFunction], StageFunction]:
        """Decorator: the remediate stage's function."""
        return self._register(Stage.REMEDIATE)

    @property
    def report(self) -> Callable[[StageFunction], StageFunction]:
        """Decorator: the report stage's function (notes; returns no plans)."""
        return self._register(Stage.REPORT)


def define_playbook(**metadata: Any) -> PlaybookCode:
    """Declare a Python playbook: the same metadata as a YAML playbook, without steps.

    Args:
        metadata: ``id`` (the module's file name), ``version``, ``title``, ``owner``,
            optional ``description`` and ``attack``, and ``trigger`` as a mapping with the
            YAML trigger's fields (``sources``, ``min_severity``, ``techniques`` ...).
            Checked when the module is loaded, with the YAML playbook's error codes.
    """
    caller = inspect.currentframe()
    line = caller.f_back.f_lineno if caller is not None and caller.f_back is not None else 0
    return PlaybookCode(metadata, line)


@dataclass(frozen=True)
class PythonPlaybook(LoadedPlaybook):
    """A valid Python playbook, routed and planned like a YAML one.

    Attributes:
        code: the module's declaration and stage functions.
    """

    code: PlaybookCode = field(default_factory=lambda: PlaybookCode({}, 0))


# Loading ----------------------------------------------------------------------------------
def _line_of(function: Callable[..., Any]) -> int:
    try:
        return inspect.getsourcelines(function)[1]
    except (OSError, TypeError):
        return 0


def _issue(file: str, line: int, code: ErrorCode | str, message: str) -> PlaybookIssue:
    return PlaybookIssue(file, line, str(code), message)


def _line_in(file: str, error: BaseException) -> int:
    """The deepest traceback line that lies in ``file`` (0 when none does)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return error.lineno
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == file]
    return frames[-1].lineno or 0 if frames else 0


def _import(path: Path) -> ModuleType:
    # A name of our own, so that a playbook called ``json.py`` never shadows the library,
    # and importing it twice (a reload after an edit) replaces the earlier module.
    name = f"stanch_playbooks.{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_python_playbook(path: Path | str) -> PythonPlaybook:
    """Import a playbook module and check what it declares.

    Raises:
        PlaybookError: ``no-file``; ``python-import`` (the module raised or has a syntax
            error: the line is where); ``no-playbook`` (none or several
            :func:`define_playbook` in it); ``stage-function`` (a stage function that is not
            ``async def`` of one argument, or a stage given twice); the YAML codes for the
            metadata (``id-mismatch``, ``missing-field``, ``bad-severity`` ...); ``no-steps``.
    """
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise PlaybookError([_issue(file, 0, ErrorCode.NO_FILE, "cannot read playbook: no file")])
    try:
        module = _import(path)
    except Exception as exc:
        # Whatever the module raised is its author's to fix; say what and where.
        where = _line_in(str(path.resolve()), exc) or _line_in(file, exc)
        message = f"the module cannot be imported: {type(exc).__name__}: {exc}"
        raise PlaybookError([_issue(file, where, ErrorCode.PYTHON_IMPORT, message)]) from exc
    declared = [v for v in vars(module).values() if isinstance(v, PlaybookCode)]
    if len(declared) != 1:
        found = "no" if not declared else f"{len(declared)}"
        message = f"{found} define_playbook(...) in the module; a playbook module declares one"
        raise PlaybookError([_issue(file, 1, ErrorCode.NO_PLAYBOOK, message)])
    code = declared[0]
    issues = [_issue(file, line, ErrorCode.STAGE_FUNCTION, why) for line, why in code.problems]
    try:
        spec = Playbook.model_validate({**code.metadata, "steps": Steps()})
    except ValidationError as exc:
        for error in exc.errors():
            issues.append(_metadata_issue(file, code.line, error))
        raise PlaybookError(sorted(issues, key=lambda i: i.line)) from exc
    if "steps" in code.metadata:
        issues.append(
            _issue(file, code.line, ErrorCode.UNKNOWN_FIELD, "steps are stage functions here")
        )
    if spec.id != path.stem:
        issues.append(
            _issue(
                file,
                code.line,
                ErrorCode.ID_MISMATCH,
                f"id {spec.id!r} must equal the file name {path.stem!r}",
            )
        )
    if not code.stages and not code.problems:
        issues.append(
            _issue(file, code.line, ErrorCode.NO_STEPS, "no stage function (@book.contain ...)")
        )
    if issues:
        raise PlaybookError(sorted(issues, key=lambda i: i.line))
    return PythonPlaybook(spec=spec, file=file, code=code)


def _metadata_issue(file: str, line: int, error: Any) -> PlaybookIssue:
    where = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    if kind == "missing":
        code: str = ErrorCode.MISSING_FIELD
    elif kind == "extra_forbidden":
        code = ErrorCode.UNKNOWN_FIELD
    elif kind in {c.value for c in ErrorCode}:
        code = kind
    else:
        code = ErrorCode.INVALID_VALUE
    return _issue(file, line, code, f"{where}: {error['msg']}")


# Planning ---------------------------------------------------------------------------------
class MutationRefused(PlaybookRunError):
    """A Python playbook asked a capability to change something instead of returning a plan."""


def _read_only(capability: Capability, lookup: Lookup, playbook: str) -> Any:
    """A view of one capability that answers its read-only lookups and nothing else.

    The view keeps no adapter: each call goes through ``lookup`` (which itself refuses
    anything but a lookup), and the lookup is held only in this closure.
    """
    allowed = {
        spec.verb: spec
        for spec in ACTIONS.values()
        if spec.capability is capability and spec.lookup
    }

    def attribute(_view: object, name: str) -> Any:
        spec = allowed.get(name)
        if spec is None:
            action = f"{capability.value}.{name}"
            if action in ACTIONS:
                raise MutationRefused(
                    playbook,
                    action,
                    f"{action} changes the vendor's state; return "
                    f"ctx.plan({action!r}, ...) instead, so that policy, approval and the "
                    "ledger see it",
                )
            raise AttributeError(f"{capability.value} has no lookup {name!r}")

        async def call(**kwargs: Any) -> Any:
            return await lookup(spec.name, kwargs)

        call.__name__ = spec.verb
        return call

    view = type(
        f"ReadOnly{capability.value.title()}",
        (),
        {
            "__slots__": (),
            "__getattr__": attribute,
            "__repr__": lambda _self: f"<read-only {capability.value}: {sorted(allowed)}>",
        },
    )
    return view()


class Facts(Mapping[str, Any]):
    """Read-only plain data, by key or attribute: ``facts["users"]`` or ``facts.users``."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", MappingProxyType(dict(data)))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"no {name!r}; there are {', '.join(self._data)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the incident is read-only to a playbook")

    def __repr__(self) -> str:
        return f"Facts({dict(self._data)!r})"


class StageContext:
    """What a stage function is handed: the incident as data, read-only lookups, plans.

    Attributes:
        stage: the stage being planned.
        incident: the incident as plain, read-only data, by attribute or key (the
            fields templates see: ``id``, ``tenant``, ``severity``, ``hostnames``,
            ``users``, ``external_ips``, ``urls``, ``email_addresses``, ``techniques`` ...).
        alerts: the alerts as plain data.
        state: a dict the stage functions share (what investigate found, for contain).
        edr, identity, firewall: read-only views: lookups only (``find_host``,
            ``get_host``, ``find_user``, ``get_user``, ``list_blocked``).
    """

    def __init__(
        self,
        playbook: PythonPlaybook,
        incident: Incident,
        stage: Stage,
        lookup: Lookup,
        state: dict[str, Any],
    ) -> None:
        context = build_context(incident)
        self._playbook = playbook
        self._incident = incident
        self.stage = stage
        self.incident = Facts(context["incident"])
        self.alerts: tuple[Facts, ...] = tuple(Facts(a) for a in context["alerts"])
        self.state = state
        self.edr = _read_only(Capability.EDR, lookup, playbook.id)
        self.identity = _read_only(Capability.IDENTITY, lookup, playbook.id)
        self.firewall = _read_only(Capability.FIREWALL, lookup, playbook.id)
        self.notes: list[StepNote] = []

    def plan(
        self,
        action: str,
        *,
        label: str | None = None,
        step: str | None = None,
        approval: Literal["policy", "required"] = "policy",
        description: str | None = None,
        **args: Any,
    ) -> PlannedAction:
        """A plan for ``action`` with its arguments, checked like a YAML step's.

        Args:
            action: ``<capability>.<verb>`` (``edr.contain_host``); not a lookup.
            label: how a human recognises the target (default: the target itself).
            step: the step id shown in plans and reports (default: the stage function).
            approval: ``required`` asks a human even where policy would not; a playbook
                cannot loosen policy.
            description: why, shown in plans.
            args: the action's arguments as the capability method names them.

        Raises:
            PlaybookRunError: an unknown action, a lookup, the wrong stage, an unknown,
                missing or mistyped argument, or an empty target.
        """
        step_id = step or self._function_name()
        fail = self._failure(step_id)
        if not _STEP_ID.match(step_id):
            raise fail(f"step {step_id!r} is not a step id (lowercase, digits, _)")
        spec = ACTIONS.get(action)
        if spec is None:
            raise fail(f"{action!r} is not an action stanch knows")
        if spec.lookup:
            raise fail(f"{action} is a lookup: call it (await ctx.{action}(...)), do not plan it")
        if self.stage not in spec.stages:
            stages = ", ".join(sorted(s.value for s in spec.stages))
            raise fail(f"{action} belongs in {stages}, not {self.stage.value}")
        unknown = sorted(set(args) - set(spec.params))
        if unknown:
            raise fail(f"{action} takes no argument {', '.join(unknown)}")
        missing = [p.name for p in spec.params.values() if p.required and p.name not in args]
        if missing:
            raise fail(f"{action} needs {', '.join(missing)}")
        for name, value in args.items():
            if not spec.params[name].accepts(value):
                raise fail(f"{name}={value!r}; {action} takes {spec.params[name].type_name}")
        assert spec.target is not None  # every executable verb has a target
        target = args.pop(spec.target)
        if not isinstance(target, str) or not target:
            raise fail(f"{spec.target}={target!r} is not a target")
        plan = ActionPlan(
            tenant=self._incident.tenant,
            incident_id=self._incident.id,
            capability=spec.capability,
            verb=spec.verb,
            target=target,
            target_label=str(label) if label is not None else target,
            parameters=args,
            stage=self.stage,  # spec.stages holds only contain and remediate for actions
        )
        return PlannedAction(step_id, plan, approval, description)

    def note(self, text: str, *, step: str | None = None) -> None:
        """Tell the analyst something stanch does not do itself (a manual step)."""
        self.notes.append(
            StepNote(step or self._function_name(), self.stage, "not_executed", str(text))
        )

    def _function_name(self) -> str:
        function = self._playbook.code.stages[self.stage]
        return function.__name__

    def _failure(self, step: str) -> Callable[[str], PlaybookRunError]:
        return lambda reason: PlaybookRunError(self._playbook.id, step, reason)


def _where(playbook: PythonPlaybook, function: StageFunction, error: BaseException) -> str:
    line = _line_in(str(Path(playbook.file).resolve()), error) or _line_in(playbook.file, error)
    return f"{playbook.file}:{line or _line_of(function)}"


async def plan_python_playbook(
    playbook: PythonPlaybook,
    incident: Incident,
    lookup: Lookup,
    *,
    run_stage: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
) -> PlaybookPlan:
    """Run the playbook's stage functions in stage order and collect their plans.

    Args:
        playbook: a loaded Python playbook.
        incident: the incident to answer.
        lookup: answers the read-only calls (the same lookup a YAML playbook gets).
        run_stage: how to run one stage function, given its name and a thunk (the
            lifecycle runs each as a Prefect task, so it shows on the run's graph);
            default: call it.

    Returns:
        The plans of every stage, and the notes.

    Raises:
        PlaybookRunError: a stage function raised, returned something other than plans,
            or planned for another stage; the message names file and line.
    """
    out = PlaybookPlan(playbook.id, playbook.version, incident.id)
    state: dict[str, Any] = {}
    seen: dict[tuple[str, str], str] = {}
    for stage in STAGE_ORDER:
        function = playbook.code.stages.get(stage)
        if function is None:
            continue
        context = StageContext(playbook, incident, stage, lookup, state)
        name = f"{playbook.id}.{stage.value}"

        async def call(function: StageFunction = function, context: StageContext = context) -> Any:
            return await function(context)

        try:
            returned = await (run_stage(name, call) if run_stage else call())
        except PlaybookRunError:
            raise
        except Exception as exc:
            raise PlaybookRunError(
                playbook.id,
                function.__name__,
                f"{_where(playbook, function, exc)}: {type(exc).__name__}: {exc}",
            ) from exc
        for planned in _plans_returned(playbook, function, stage, incident, returned):
            key = (planned.plan.action, planned.plan.target)
            if key in seen:
                out.notes.append(
                    StepNote(
                        planned.step,
                        stage,
                        "skipped",
                        f"{planned.plan.action} {planned.plan.target_label}: already planned "
                        f"by {seen[key]}",
                    )
                )
                continue
            seen[key] = planned.step
            out.actions.append(planned)
        out.notes.extend(context.notes)
        out.results[function.__name__] = {"result": None, "missing": [], "skipped": False}
    return out


def _plans_returned(
    playbook: PythonPlaybook,
    function: StageFunction,
    stage: Stage,
    incident: Incident,
    returned: Any,
) -> list[PlannedAction]:
    where = f"{playbook.file}:{_line_of(function)}"
    if returned is None:
        return []
    if isinstance(returned, PlannedAction) or not isinstance(returned, list | tuple):
        raise PlaybookRunError(
            playbook.id,
            function.__name__,
            f"{where}: returned {type(returned).__name__}; return a list of ctx.plan(...) "
            "(or nothing)",
        )
    plans: list[PlannedAction] = []
    for item in returned:
        if not isinstance(item, PlannedAction):
            raise PlaybookRunError(
                playbook.id,
                function.__name__,
                f"{where}: returned a list holding {type(item).__name__}; only "
                "ctx.plan(...) results are plans",
            )
        if item.plan.stage is not stage or item.plan.incident_id != incident.id:
            raise PlaybookRunError(
                playbook.id,
                function.__name__,
                f"{where}: a plan made for another stage or incident",
            )
        plans.append(item)
    return plans
