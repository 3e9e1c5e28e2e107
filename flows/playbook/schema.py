"""The playbook schema: the YAML a SOC lead writes, its error codes, and the action catalogue.

The catalogue is derived from the capability protocols (``integrations/capabilities.py``):
a step's arguments are checked against the protocol method's own signature, so a playbook
cannot name an argument no adapter takes.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from flows.models import Stage
from flows.policy import CONTAINMENT_ACTIONS, KNOWN_ACTIONS
from integrations.capabilities import EDR, Capability, Firewall, IdentityProvider
from integrations.ocsf import SeverityId

ALERT_SOURCES: tuple[str, ...] = ("crowdstrike", "defender", "sentinelone", "okta", "entra")
"""The integrated vendors that send alerts (each has an ``integrations/<vendor>/alerts.py``)."""

README_URL = "playbooks/README.md"
"""Where each error code is explained, as ``playbooks/README.md#<code>``."""


class ErrorCode(StrEnum):
    """Stable codes of playbook validation errors, each a section of ``playbooks/README.md``."""

    NO_FILE = "no-file"
    YAML_SYNTAX = "yaml-syntax"
    NOT_A_MAPPING = "not-a-mapping"
    DUPLICATE_KEY = "duplicate-key"
    UNKNOWN_FIELD = "unknown-field"
    MISSING_FIELD = "missing-field"
    INVALID_VALUE = "invalid-value"
    ID_MISMATCH = "id-mismatch"
    UNKNOWN_STAGE = "unknown-stage"
    NO_STEPS = "no-steps"
    BAD_SEVERITY = "bad-severity"
    UNKNOWN_SOURCE = "unknown-source"
    BAD_ATTACK_ID = "bad-attack-id"
    STEP_KIND = "step-kind"
    MISPLACED_FIELD = "misplaced-field"
    DUPLICATE_STEP = "duplicate-step"
    UNKNOWN_ACTION = "unknown-action"
    UNKNOWN_ARGUMENT = "unknown-argument"
    MISSING_ARGUMENT = "missing-argument"
    BAD_ARGUMENT_TYPE = "bad-argument-type"
    WRONG_STAGE = "wrong-stage"
    UNKNOWN_DEPENDENCY = "unknown-dependency"
    LATER_DEPENDENCY = "later-dependency"
    DEPENDENCY_CYCLE = "dependency-cycle"
    BAD_TEMPLATE = "bad-template"
    UNKNOWN_VARIABLE = "unknown-variable"
    LOOSENED_APPROVAL = "loosened-approval"
    SECRET_IN_PLAYBOOK = "secret-in-playbook"  # noqa: S105  (a code, not a secret)
    # Python playbooks (``playbooks/<id>.py``)
    PYTHON_IMPORT = "python-import"
    NO_PLAYBOOK = "no-playbook"
    STAGE_FUNCTION = "stage-function"


# Stages in the order they run; a step may only depend on steps of its own or earlier ones.
STAGE_ORDER: tuple[Stage, ...] = (
    Stage.INVESTIGATE,
    Stage.CONTAIN,
    Stage.REMEDIATE,
    Stage.REPORT,
)

_SEVERITY_NAMES = ("informational", "low", "medium", "high", "critical", "fatal")


# The action catalogue ---------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One argument of a capability method.

    Attributes:
        name: the argument name as the protocol spells it (``host_id``, ``ttl_seconds``).
        types: the Python types a value may have (``bool`` never counts as ``int``).
        required: the method has no default for it.
    """

    name: str
    types: tuple[type, ...]
    required: bool

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has one of the argument's types."""
        if isinstance(value, bool):
            return bool in self.types
        return isinstance(value, self.types)

    @property
    def type_name(self) -> str:
        """``str``, ``int or none`` ... for messages."""
        return " or ".join("none" if t is type(None) else t.__name__ for t in self.types)


@dataclass(frozen=True)
class ActionSpec:
    """One ``<capability>.<verb>`` a step may call.

    Attributes:
        capability: the capability (``edr``).
        verb: the protocol method (``contain_host``).
        lookup: read-only (investigation); its return value becomes ``steps.<id>.result``.
        target: the argument that names what is acted on (the plan's ``target``), if any.
        params: every argument, in signature order.
        stages: the stages the action may appear in.
    """

    capability: Capability
    verb: str
    lookup: bool
    target: str | None
    params: Mapping[str, ParamSpec]
    stages: frozenset[Stage]

    @property
    def name(self) -> str:
        """``<capability>.<verb>``."""
        return f"{self.capability.value}.{self.verb}"


_PROTOCOLS: dict[Capability, type] = {
    Capability.EDR: EDR,
    Capability.IDENTITY: IdentityProvider,
    Capability.FIREWALL: Firewall,
}

# Read-only calls a playbook may make during investigation.
_LOOKUPS: dict[Capability, frozenset[str]] = {
    Capability.EDR: frozenset({"find_host", "get_host"}),
    Capability.IDENTITY: frozenset({"find_user", "get_user"}),
    Capability.FIREWALL: frozenset({"list_blocked"}),
}

# Undoing containment belongs after remediation, never in the contain stage itself.
_REVERSALS = frozenset({"release_host", "unsuspend_user", "unblock_hash", "unblock_ip"})


def _types(annotation: Any) -> tuple[type, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for a in typing.get_args(annotation) for t in _types(a))
    if annotation is None:
        return (type(None),)
    return (annotation,) if isinstance(annotation, type) else (object,)


def _spec(capability: Capability, verb: str, lookup: bool) -> ActionSpec:
    method = getattr(_PROTOCOLS[capability], verb)
    hints = typing.get_type_hints(method)
    params: dict[str, ParamSpec] = {}
    target: str | None = None
    for parameter in list(inspect.signature(method).parameters.values())[1:]:
        params[parameter.name] = ParamSpec(
            parameter.name,
            _types(hints[parameter.name]),
            parameter.default is inspect.Parameter.empty,
        )
        # The one positional argument of a verb is what it acts on: host id, user id, IP.
        if target is None and parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            target = parameter.name
    action = f"{capability.value}.{verb}"
    if lookup:
        stages = frozenset({Stage.INVESTIGATE})
    elif action in CONTAINMENT_ACTIONS:
        stages = frozenset({Stage.CONTAIN})
    elif verb in _REVERSALS:
        stages = frozenset({Stage.REMEDIATE})
    else:
        stages = frozenset({Stage.CONTAIN, Stage.REMEDIATE})
    return ActionSpec(capability, verb, lookup, target, params, stages)


def _catalogue() -> dict[str, ActionSpec]:
    specs: dict[str, ActionSpec] = {}
    for capability in _PROTOCOLS:
        for verb in sorted(KNOWN_ACTIONS[capability]):
            spec = _spec(capability, verb, lookup=False)
            specs[spec.name] = spec
        for verb in sorted(_LOOKUPS[capability]):
            spec = _spec(capability, verb, lookup=True)
            specs[spec.name] = spec
    return specs


def _hunt_spec() -> ActionSpec:
    # EDR.hunt takes an Indicator and a datetime; a playbook writes them as typed scalars
    # (flows.playbook.hunting turns them into the adapter's arguments, validated).
    params = {
        "kind": ParamSpec("kind", (str,), required=True),
        "value": ParamSpec("value", (str,), required=True),
        "since_days": ParamSpec("since_days", (int,), required=False),
    }
    return ActionSpec(Capability.EDR, "hunt", True, "value", params, frozenset({Stage.INVESTIGATE}))


ACTIONS: Mapping[str, ActionSpec] = {**_catalogue(), "edr.hunt": _hunt_spec()}
"""Every action a step may name: stanch's executable verbs and the read-only lookups."""

STEP_STAGES: Mapping[str, frozenset[Stage]] = {
    "hunt": frozenset(STAGE_ORDER),
    "notify": frozenset(STAGE_ORDER),
    "manual": frozenset(STAGE_ORDER),
}
"""Where the steps stanch reports but does not execute may appear: anywhere."""


# Field types ------------------------------------------------------------------------------
def _severity(value: Any) -> SeverityId:
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in _SEVERITY_NAMES:
        raise PydanticCustomError(
            "bad-severity",
            "{value} is not a severity; use one of " + ", ".join(_SEVERITY_NAMES),
            {"value": repr(value)},
        )
    return SeverityId[name.upper()]


def _source(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ALERT_SOURCES:
        raise PydanticCustomError(
            "unknown-source",
            "{value} is not an alert source stanch integrates; use one of "
            + ", ".join(ALERT_SOURCES),
            {"value": repr(value)},
        )
    return value.lower()


def _attack_id(pattern: str, what: str, example: str) -> Any:
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise PydanticCustomError(
                "bad-attack-id",
                "{value} is not an ATT&CK {what} id (like {example})",
                {"value": repr(value), "what": what, "example": example},
            )
        return value

    return check


def _approval(value: Any) -> Any:
    if value == "unattended":
        raise PydanticCustomError(
            "loosened-approval",
            "a playbook cannot make an action unattended: the tenant's policy decides that; "
            "write approval: policy (the default) or approval: required",
        )
    return value


Severity = Annotated[SeverityId, BeforeValidator(_severity)]
Source = Annotated[str, BeforeValidator(_source)]
TechniqueId = Annotated[str, BeforeValidator(_attack_id(r"T\d{4}(\.\d{3})?", "technique", "T1486"))]
TacticId = Annotated[str, BeforeValidator(_attack_id(r"TA\d{4}", "tactic", "TA0040"))]
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
EventName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*(\.\*)?$")]
Scalar = str | int | bool | None
Timestamp = AwareDatetime | date
CacaoData = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """Which incidents a playbook answers; every criterion given must hold.

    Attributes:
        sources: alert sources (vendor names: ``crowdstrike``, ``okta`` ...); any alert from one.
        min_severity: the incident's severity is at least this.
        max_severity: the incident's severity is at most this.
        finding_types: any alert has one of these ``finding_info.types`` (case-insensitive).
        tactics: any alert names one of these ATT&CK tactics.
        techniques: any alert names one of these ATT&CK techniques (``T1566`` also
            matches its sub-techniques ``T1566.002``).
        events: Prefect event names (``siem.detection.raised``, a trailing ``*`` allowed)
            that also run this playbook, through the ``playbook-on-event`` deployment; a
            trigger that names events and no alert criterion answers events only.
    """

    sources: tuple[Source, ...] = ()
    min_severity: Severity = SeverityId.INFORMATIONAL
    max_severity: Severity = SeverityId.FATAL
    finding_types: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    tactics: tuple[TacticId, ...] = ()
    techniques: tuple[TechniqueId, ...] = ()
    events: tuple[EventName, ...] = ()


class Step(_Strict):
    """One step: exactly one of ``action``, ``hunt``, ``notify`` or ``manual``.

    Attributes:
        id: unique in the playbook; other steps read its result as ``steps.<id>.result``.
        description: what the step is for, shown in plans.
        action: ``<capability>.<verb>``: an executable verb or a read-only lookup.
        hunt: what to search for across the estate; stanch reports it, an analyst runs it.
        notify: who to tell (a channel or team); stanch reports it, an analyst sends it.
        manual: an instruction for the analyst; stanch reports it.
        message: the text of a ``notify`` step.
        args: the action's named arguments, as the capability method names them.
        label: how a human recognises the target (default: the target itself).
        for_each: a ``{{ list }}`` expression; the step runs once per element, as ``item``.
        when: a ``{{ condition }}`` expression; false means skip (checked per ``item``).
        depends_on: steps that must have run first; if one was skipped, so is this one.
        approval: ``policy`` (the tenant's policy decides) or ``required`` (always ask a
            human, even where policy would allow it unattended).
        confirm: a question an analyst must answer yes to before the step is planned
            (``Is the host clean?``); until then the plan lists the step as waiting.
        cacao: what ``stanch playbook import`` kept of the CACAO step that stanch has no
            field for (its original commands, other tools' extensions); export writes it
            back. Never read when planning.
    """

    id: StepId
    description: str | None = None
    action: str | None = None
    hunt: str | None = None
    notify: str | None = None
    manual: str | None = None
    message: str | None = None
    args: dict[Annotated[str, Field(min_length=1)], Scalar] = Field(default_factory=dict)
    label: str | None = None
    for_each: str | None = None
    when: str | None = None
    depends_on: tuple[StepId, ...] = ()
    approval: Annotated[Literal["policy", "required"], BeforeValidator(_approval)] = "policy"
    confirm: str | None = None
    cacao: CacaoData | None = None

    @property
    def kind(self) -> str:
        """``action``, ``hunt``, ``notify`` or ``manual`` (``""`` if none or several)."""
        given = [k for k in ("action", "hunt", "notify", "manual") if getattr(self, k) is not None]
        return given[0] if len(given) == 1 else ""


class Steps(_Strict):
    """Steps grouped by lifecycle stage; each list runs in order (after its dependencies)."""

    investigate: tuple[Step, ...] = ()
    contain: tuple[Step, ...] = ()
    remediate: tuple[Step, ...] = ()
    report: tuple[Step, ...] = ()

    def by_stage(self) -> list[tuple[Stage, tuple[Step, ...]]]:
        """``(stage, steps)`` in lifecycle order."""
        return [(stage, getattr(self, stage.value)) for stage in STAGE_ORDER]


class Playbook(_Strict):
    """One playbook file.

    Attributes:
        id: equals the file name without ``.yaml``.
        version: bumped on every change; shown in plans and reports.
        title: one line for humans.
        owner: who maintains it (a team or a person).
        description: what it is for and what it deliberately does not do.
        attack: the ATT&CK techniques the playbook answers.
        trigger: which incidents it answers.
        steps: what it does, per lifecycle stage.
        created: when the playbook was first written (a date or a timestamp).
        modified: when this version was written; with ``created``, the dates a CACAO
            export carries.
        cacao: what ``stanch playbook import`` kept of the CACAO document that stanch has
            no field for; export writes it back. Never read when planning.
    """

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    version: Annotated[int, Field(strict=True, ge=1)]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    owner: Annotated[str, Field(min_length=1)]
    description: str | None = None
    attack: tuple[TechniqueId, ...] = ()
    trigger: Trigger
    steps: Steps
    created: Timestamp | None = None
    modified: Timestamp | None = None
    cacao: CacaoData | None = None
