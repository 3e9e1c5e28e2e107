"""Per-tenant rules of engagement: the YAML schema, its loader and the evaluator.

A tenant's ``policies/<tenant>.yaml`` (falling back to ``policies/default.yaml``) says which
actions run unattended, which need how many approvers, and which never run;
:class:`RulesOfEngagement` applies it behind the :class:`flows.policy.Policy` protocol.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flows.errors import StanchError
from flows.models import ActionPlan, Incident, Stage, Verdict
from flows.policy import PolicyDecision
from flows.yaml_lines import YamlLines
from integrations.capabilities import Capability
from integrations.ocsf import SeverityId

__all__ = [
    "CONTAINMENT_ACTIONS",
    "KNOWN_ACTIONS",
    "ActionCounter",
    "ActionRule",
    "ApprovalDefaults",
    "Approvers",
    "Budget",
    "Condition",
    "PolicyError",
    "PolicyErrorCode",
    "PolicyIssue",
    "Protected",
    "RoeDecision",
    "RulesFile",
    "RulesOfEngagement",
    "count_recent_actions",
    "format_duration",
    "load_policy",
    "parse_policy",
    "policy_for_tenant",
]

# The mutating verbs of each capability protocol (pinned against the protocols by a test):
# a policy naming any other verb is a typo, not a rule for a future verb.
KNOWN_ACTIONS: Mapping[Capability, frozenset[str]] = {
    Capability.EDR: frozenset({"contain_host", "release_host", "block_hash", "unblock_hash"}),
    Capability.IDENTITY: frozenset(
        {"suspend_user", "unsuspend_user", "revoke_sessions", "expire_password", "reset_factors"}
    ),
    Capability.FIREWALL: frozenset({"block_ip", "unblock_ip"}),
    Capability.ALERTS: frozenset(),
}

# Actions that cut someone off. A timeout must never count as a yes for these: silence from
# the approvers is not consent to isolate a host or lock out a user.
CONTAINMENT_ACTIONS: frozenset[str] = frozenset(
    {"edr.contain_host", "identity.suspend_user", "identity.revoke_sessions", "firewall.block_ip"}
)

TimeoutOutcome = Literal["deny", "approve"]
ActionCounter = Callable[[str, str, timedelta], int]
"""``(tenant, action, window) -> how many of that action ran in the tenant within window``."""

_SEVERITY_NAMES = ("informational", "low", "medium", "high", "critical", "fatal")


class PolicyErrorCode(StrEnum):
    """Stable codes of policy validation errors (documented in ``policies/README.md``)."""

    NO_POLICY = "no-policy"
    BAD_TENANT = "bad-tenant"
    YAML_SYNTAX = "yaml-syntax"
    NOT_A_MAPPING = "not-a-mapping"
    DUPLICATE_KEY = "duplicate-key"
    UNKNOWN_FIELD = "unknown-field"
    MISSING_FIELD = "missing-field"
    INVALID_VALUE = "invalid-value"
    BAD_COUNT = "bad-count"
    BAD_CIDR = "bad-cidr"
    BAD_DURATION = "bad-duration"
    BAD_SEVERITY = "bad-severity"
    BAD_SLACK_ID = "bad-slack-id"
    UNKNOWN_CAPABILITY = "unknown-capability"
    UNKNOWN_ACTION = "unknown-action"
    UNKNOWN_GROUP = "unknown-group"
    EMPTY_CONDITION = "empty-condition"
    NO_APPROVERS = "no-approvers"
    UNREACHABLE_APPROVALS = "unreachable-approvals"
    UNSAFE_TIMEOUT = "unsafe-timeout"
    TENANT_MISMATCH = "tenant-mismatch"


_CODES = frozenset(c.value for c in PolicyErrorCode)


# Errors ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyIssue:
    """One thing wrong with a policy file.

    Attributes:
        file: the file as it was named to the loader (``<inline>`` for text).
        line: 1-based line of the offending key or item; 0 when the file itself is the issue.
        field: dotted path of the field (``actions.edr.contain_host.budget.max``), or ``""``.
        code: a :class:`PolicyErrorCode` value.
        reason: what is wrong, in words a SOC lead can act on.
    """

    file: str
    line: int
    field: str
    code: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"{self.field}: {self.reason}" if self.field else self.reason
        return f"{where}: {self.code}: {what}"


class PolicyError(StanchError):
    """A policy could not be loaded; ``issues`` lists every problem found, first one first.

    Attributes:
        issues: every problem, in file order.
        code: the first issue's code.
        file: the first issue's file.
        line: the first issue's line.
        field: the first issue's field.
        reason: the first issue's reason.
    """

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        if not issues:
            raise ValueError("PolicyError needs at least one issue")
        self.issues = tuple(issues)
        first = self.issues[0]
        self.code = first.code
        self.file = first.file
        self.line = first.line
        self.field = first.field
        self.reason = first.reason
        super().__init__("\n".join(str(i) for i in self.issues))


# Field types ----------------------------------------------------------------------------
def _count(value: int) -> int:
    if value < 1:
        raise PydanticCustomError(
            "bad-count", "must be at least 1, got {value}", {"value": repr(value)}
        )
    return value


# strict: YAML ``true`` or ``"2"`` as a count is a mistake worth reporting, not coercing.
Count = Annotated[int, Field(strict=True), AfterValidator(_count)]

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> timedelta:
    if isinstance(value, bool):
        seconds = -1
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        seconds = -1
    if seconds <= 0:
        raise PydanticCustomError(
            "bad-duration",
            "{value} is not a duration; write seconds (900) or 30s, 15m, 1h, 2d",
            {"value": repr(value)},
        )
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def parse_duration(text: str) -> timedelta:
    """``900``, ``30s``, ``15m``, ``1h`` or ``7d`` as a timedelta (policy files' spelling).

    Raises:
        ValueError: not a positive duration in that form.
    """
    try:
        return _duration(int(text) if text.strip().isdigit() else text)
    except PydanticCustomError as exc:
        raise ValueError(str(exc)) from exc


def _severity(value: Any) -> SeverityId:
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in _SEVERITY_NAMES:
        raise PydanticCustomError(
            "bad-severity",
            "{value} is not a severity; use one of " + ", ".join(_SEVERITY_NAMES),
            {"value": repr(value)},
        )
    return SeverityId[name.upper()]


Severity = Annotated[SeverityId, BeforeValidator(_severity)]


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        # strict: 10.0.0.5/24 is more likely a typo than a way of writing 10.0.0.0/24.
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise PydanticCustomError(
            "bad-cidr",
            "{value} is not an IP range in CIDR form: {error}",
            {"value": repr(value), "error": str(exc)},
        ) from exc


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]
Glob = Annotated[str, Field(min_length=1)]
GroupName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
TenantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def _slack_id(prefixes: str, what: str) -> Callable[[str], str]:
    pattern = re.compile(rf"^[{prefixes}][A-Z0-9]{{2,}}$")

    def check(value: str) -> str:
        if not pattern.match(value):
            raise PydanticCustomError(
                "bad-slack-id",
                "{value} is not a Slack {what} id (like {example})",
                {"value": repr(value), "what": what, "example": f"{prefixes[0]}0123ABCD"},
            )
        return value

    return check


SlackUserId = Annotated[str, AfterValidator(_slack_id("UW", "user"))]
SlackGroupId = Annotated[str, AfterValidator(_slack_id("S", "user group"))]


def _action_name(value: str) -> str:
    capability, _, verb = value.partition(".")
    known = {c.value for c in Capability}
    if capability not in known or not verb:
        raise PydanticCustomError(
            "unknown-capability",
            "{value} does not start with a capability; use <capability>.<verb> with one of "
            + ", ".join(sorted(known)),
            {"value": repr(value)},
        )
    verbs = KNOWN_ACTIONS[Capability(capability)]
    if verb not in verbs:
        hint = difflib.get_close_matches(verb, verbs, n=1)
        raise PydanticCustomError(
            "unknown-action",
            "{capability} has no verb {verb}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            {"capability": capability, "verb": repr(verb)},
        )
    return value


ActionName = Annotated[str, AfterValidator(_action_name)]


# Schema ---------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approvers(_Strict):
    """Who may approve, and through which channels.

    Attributes:
        slack_users: Slack user ids allowed to approve.
        slack_group: a Slack user group id whose members may approve.
        slack_group_handle: the group's handle, for explanations (``soc-leads``).
        cli: whether ``stanch approvals`` at a terminal counts as an approval channel.
        prefect_ui: whether the Prefect UI's resume form does; off because anyone with Prefect
            access could use it.
    """

    slack_users: tuple[SlackUserId, ...] = ()
    slack_group: SlackGroupId | None = None
    slack_group_handle: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")] | None = None
    cli: bool = True
    prefect_ui: bool = False

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if not (self.slack_users or self.slack_group or self.cli or self.prefect_ui):
            raise PydanticCustomError(
                "no-approvers",
                "nobody could approve: list slack_users or a slack_group, or allow cli",
            )
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels an approval may arrive through (``slack``, ``cli``, ``prefect-ui``)."""
        slack = bool(self.slack_users or self.slack_group)
        flags = (("slack", slack), ("cli", self.cli), ("prefect-ui", self.prefect_ui))
        return tuple(name for name, on in flags if on)

    def describe(self) -> str:
        """Approvers as explanations name them: ``@soc-leads, U0123ABCD``."""
        names: list[str] = []
        if self.slack_group is not None:
            names.append(f"@{self.slack_group_handle or self.slack_group}")
        names.extend(self.slack_users)
        if not names:
            names.append("CLI operators" if self.cli else "Prefect UI users")
        return ", ".join(names)


class ApprovalDefaults(_Strict):
    """Defaults for every action that needs approval.

    Attributes:
        approvals: distinct approvers needed, for actions that do not say.
        timeout: how long to wait for the approvers.
        on_timeout: what silence means; only ``deny`` is accepted here, because this default
            also covers containment verbs and actions the policy does not list.
    """

    approvals: Count = 1
    timeout: Duration = timedelta(minutes=15)
    on_timeout: TimeoutOutcome = "deny"


class Budget(_Strict):
    """Blast-radius budget: at most ``max`` unattended runs of an action per ``per``.

    Attributes:
        max: how many may run in the window before approval is required again.
        per: the sliding window.
    """

    max: Count
    per: Duration = timedelta(hours=1)


class Condition(_Strict):
    """A circumstance that raises the bar: the user involved is in a named group.

    Attributes:
        user_in_group: a group from the top-level ``groups``.
        approvals: approvers needed when the condition holds.
        forbidden: when true, the action never runs while the condition holds.
    """

    user_in_group: GroupName
    approvals: Count | None = None
    forbidden: bool = False

    @model_validator(mode="after")
    def _effect(self) -> Condition:
        if self.approvals is None and not self.forbidden:
            raise PydanticCustomError(
                "empty-condition", "a condition needs approvals: N or forbidden: true"
            )
        return self


class ActionRule(_Strict):
    """What one ``<capability>.<verb>`` needs.

    Attributes:
        unattended_from: lowest incident severity at which it runs unattended; absent means
            it always needs approval.
        approvals: distinct approvers needed (default: ``approval.approvals``).
        forbidden: never run this action for this tenant.
        budget: past this many unattended runs per window, fall back to approval.
        timeout: approval timeout for this action (default: ``approval.timeout``).
        on_timeout: what silence means for this action; ``approve`` is refused for
            containment verbs.
        conditions: circumstances that raise the approver count or forbid the action.
    """

    unattended_from: Severity | None = None
    approvals: Count | None = None
    forbidden: bool = False
    budget: Budget | None = None
    timeout: Duration | None = None
    on_timeout: TimeoutOutcome | None = None
    conditions: tuple[Condition, ...] = ()


class Protected(_Strict):
    """Assets never acted on automatically.

    Attributes:
        hosts: hostname glob patterns (case-insensitive).
        users: user login glob patterns (case-insensitive).
        ips: IP ranges in CIDR form (a bare address is a /32 or /128).
        on_match: ``forbidden`` (never act) or ``approval`` (act only with ``approvals``).
        approvals: approvers needed when ``on_match`` is ``approval``.
    """

    hosts: tuple[Glob, ...] = ()
    users: tuple[Glob, ...] = ()
    ips: tuple[Network, ...] = ()
    on_match: Literal["forbidden", "approval"] = "forbidden"
    approvals: Count = 2


class RulesFile(_Strict):
    """One policy file, as written.

    Attributes:
        version: schema version; 1.
        tenant: the tenant this file is for; must match the file name when given.
        approvers: who may approve.
        approval: defaults for approvals.
        groups: named lists of user login glob patterns, for conditions.
        protected: assets never acted on automatically.
        actions: rules per ``<capability>.<verb>``; unlisted actions need approval.
    """

    version: Literal[1]
    tenant: TenantName | None = None
    approvers: Approvers
    approval: ApprovalDefaults = ApprovalDefaults()
    groups: dict[GroupName, tuple[Glob, ...]] = Field(default_factory=dict)
    protected: Protected = Protected()
    actions: dict[ActionName, ActionRule] = Field(default_factory=dict)


_Loc = tuple[str, ...]

_FIELD_NAMES = frozenset(
    name
    for model in (RulesFile, Approvers, ApprovalDefaults, Budget, Condition, ActionRule, Protected)
    for name in model.model_fields
)


def _semantic_issues(rules: RulesFile) -> list[tuple[_Loc, str, str]]:
    """Rules that span fields: group references, timeout safety, reachable approver counts."""
    issues: list[tuple[_Loc, str, str]] = []
    if rules.approval.on_timeout == "approve":
        issues.append(
            (
                ("approval", "on_timeout"),
                "unsafe-timeout",
                "the default on_timeout also covers containment verbs and unlisted actions; "
                "keep it deny and set on_timeout: approve on the specific actions instead",
            )
        )
    # Only a fixed list of Slack users is countable; a group, the CLI or the UI can grow.
    fixed = not (rules.approvers.slack_group or rules.approvers.cli or rules.approvers.prefect_ui)
    reachable = len(rules.approvers.slack_users)
    counts: list[tuple[_Loc, int]] = [(("approval", "approvals"), rules.approval.approvals)]
    if rules.protected.on_match == "approval":
        counts.append((("protected", "approvals"), rules.protected.approvals))
    for action, rule in rules.actions.items():
        where = ("actions", action)
        if rule.on_timeout == "approve" and action in CONTAINMENT_ACTIONS:
            issues.append(
                (
                    (*where, "on_timeout"),
                    "unsafe-timeout",
                    f"{action} is a containment verb: a timeout can only deny it",
                )
            )
        if rule.approvals is not None:
            counts.append(((*where, "approvals"), rule.approvals))
        for i, condition in enumerate(rule.conditions):
            at = (*where, "conditions", str(i))
            if condition.user_in_group not in rules.groups:
                known = ", ".join(sorted(rules.groups)) or "none defined"
                issues.append(
                    (
                        (*at, "user_in_group"),
                        "unknown-group",
                        f"no group {condition.user_in_group!r} under groups ({known})",
                    )
                )
            if condition.approvals is not None:
                counts.append(((*at, "approvals"), condition.approvals))
    if fixed:
        for path, n in counts:
            if n > reachable:
                issues.append(
                    (
                        path,
                        "unreachable-approvals",
                        f"{n} distinct approvers needed but only {reachable} slack_users may "
                        "approve",
                    )
                )
    return issues


# Loading --------------------------------------------------------------------------------


def _issue_from_error(error: Any, lines: YamlLines, file: str) -> PolicyIssue:
    # "[key]" marks an error in a dict key rather than its value: the key's line is the same.
    path = tuple(str(p) for p in error["loc"] if p != "[key]")
    kind = error["type"]
    if kind in _CODES:
        code, reason = kind, error["msg"]
    elif kind == "extra_forbidden":
        hint = difflib.get_close_matches(path[-1], _FIELD_NAMES, n=1) if path else []
        code = "unknown-field"
        reason = "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif kind == "missing":
        code, reason = "missing-field", "required field is missing"
    else:
        code, reason = "invalid-value", error["msg"]
    return PolicyIssue(file, lines.line(path), ".".join(path), code, reason)


def parse_policy(text: str, *, file: str = "<inline>") -> RulesFile:
    """Validate policy YAML text.

    Args:
        text: the YAML document.
        file: how to name the source in errors.

    Returns:
        The validated rules.

    Raises:
        PolicyError: with every issue found, each with its line.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([PolicyIssue(file, line, "", "yaml-syntax", problem)]) from exc
    finally:
        loader.dispose()
    if node is None or not isinstance(data, dict):
        raise PolicyError(
            [PolicyIssue(file, 1, "", "not-a-mapping", "a policy is a mapping of fields")]
        )
    lines = YamlLines()
    lines.walk(node)
    issues = [
        PolicyIssue(file, line, ".".join(path), "duplicate-key", f"{path[-1]!r} appears twice")
        for path, line in lines.duplicates
    ]
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issue_from_error(e, lines, file) for e in exc.errors())
        raise PolicyError(sorted(issues, key=lambda i: i.line)) from exc
    issues.extend(
        PolicyIssue(file, lines.line(path), ".".join(path), code, reason)
        for path, code, reason in _semantic_issues(rules)
    )
    stem = Path(file).stem
    if rules.tenant is not None and file != "<inline>" and stem != rules.tenant:
        issues.append(
            PolicyIssue(
                file,
                lines.line(("tenant",)),
                "tenant",
                "tenant-mismatch",
                f"file is for tenant {stem!r} but says tenant: {rules.tenant}",
            )
        )
    if issues:
        raise PolicyError(sorted(issues, key=lambda i: i.line))
    return rules


def load_policy(path: Path | str, *, counter: ActionCounter | None = None) -> RulesOfEngagement:
    """Load and validate one policy file.

    Args:
        path: the YAML file.
        counter: how to count recent actions for blast-radius budgets (see
            :meth:`RulesOfEngagement.decide`).

    Returns:
        The evaluator for that file.

    Raises:
        PolicyError: the file is missing or invalid (code ``no-policy`` or a validation code).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read policy: {exc.strerror or exc}"
        raise PolicyError([PolicyIssue(str(path), 0, "", "no-policy", reason)]) from exc
    return RulesOfEngagement(parse_policy(text, file=str(path)), source=str(path), counter=counter)


def policy_for_tenant(
    directory: Path | str, tenant: str, *, counter: ActionCounter | None = None
) -> RulesOfEngagement:
    """Load ``<tenant>.yaml`` from ``directory``, or ``default.yaml`` when there is none.

    Args:
        directory: the policies directory.
        tenant: the tenant id (also used as the file name, so it is checked first).
        counter: passed to :func:`load_policy`.

    Returns:
        The tenant's evaluator.

    Raises:
        PolicyError: ``bad-tenant`` for an impossible tenant id, ``no-policy`` when neither
            file exists, or the validation issues of the file found.
    """
    directory = Path(directory)
    # The tenant names a file: refuse anything that could step outside the directory.
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", tenant):
        reason = f"{tenant!r} is not a tenant id"
        raise PolicyError([PolicyIssue(str(directory), 0, "", "bad-tenant", reason)])
    own = directory / f"{tenant}.yaml"
    return load_policy(own if own.is_file() else directory / "default.yaml", counter=counter)


# Evaluation -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RoeDecision(PolicyDecision):
    """A :class:`PolicyDecision` with everything the approval step needs.

    ``reason`` holds the human explanation, e.g. ``suspend_user jdoe: approval by 2 of
    @soc-leads, because severity high and user in group executives``.

    Attributes:
        action: ``<capability>.<verb>``.
        target: what a human recognises the target as.
        approvers: who may approve, and through which channels.
        timeout: how long to wait for approvers.
        on_timeout: what silence means (``deny`` for every containment verb).
        because: the explanation's reasons, in order.
        policy: which policy decided (tenant or file stem).
    """

    action: str
    target: str
    approvers: Approvers
    timeout: timedelta
    on_timeout: TimeoutOutcome = "deny"
    because: tuple[str, ...] = ()
    policy: str = ""

    @property
    def explanation(self) -> str:
        """The one-line human explanation (same as ``reason``)."""
        return self.reason


def _plus(base: int | ActionCounter | None, taken: Mapping[str, int]) -> int | ActionCounter | None:
    """``base`` plus what this batch already ran unattended, per action."""
    if base is None:
        return None
    counter: ActionCounter = (lambda t, a, w: base) if isinstance(base, int) else base

    def count(tenant: str, action: str, window: timedelta) -> int:
        return counter(tenant, action, window) + taken.get(action, 0)

    return count


def format_duration(span: timedelta) -> str:
    """A duration the way policy files write it: ``90s``, ``15m``, ``1h``, ``2d``."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _matches(value: str, patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        if fnmatch.fnmatchcase(value.lower(), pattern.lower()):
            return pattern
    return None


class RulesOfEngagement:
    """Decides plans by a tenant's :class:`RulesFile`; satisfies :class:`flows.policy.Policy`.

    Args:
        rules: the validated rules.
        source: the file they came from, for explanations and errors.
        counter: counts recent actions for budgets when :meth:`decide` is not given
            ``recent_actions``. Without either, a budgeted action needs approval: a budget
            that cannot be checked is treated as spent.

    Raises:
        PolicyError: the rules break a cross-field rule (see :func:`parse_policy`).
    """

    def __init__(
        self, rules: RulesFile, *, source: str | None = None, counter: ActionCounter | None = None
    ) -> None:
        issues = _semantic_issues(rules)
        if issues:
            file = source or "<rules>"
            raise PolicyError([PolicyIssue(file, 0, ".".join(p), c, r) for p, c, r in issues])
        self.rules = rules
        self.source = source
        self.counter = counter
        self.name = rules.tenant or (Path(source).stem if source else "inline")

    def decide(
        self,
        plan: ActionPlan,
        incident: Incident,
        *,
        recent_actions: int | ActionCounter | None = None,
    ) -> RoeDecision:
        """Decide one plan for one incident.

        Args:
            plan: what would be done.
            incident: why; its severity and the users it names feed the rules.
            recent_actions: for budgets, how many of ``plan.action`` already ran in the
                tenant within the budget window, or a counter to ask; defaults to the
                constructor's ``counter``.

        Returns:
            The verdict, approvers needed and eligible, timeout and explanation.
        """
        identity = plan.capability is Capability.IDENTITY
        # "User in group" means the account acted on for identity verbs, and otherwise the
        # people the incident is about (the executive whose laptop would be isolated).
        users = (plan.target_label, plan.target) if identity else tuple(incident.users)
        return self.evaluate(
            tenant=plan.tenant,
            action=plan.action,
            target=plan.target_label,
            target_id=plan.target,
            severity=incident.severity,
            users=users,
            containment=plan.stage is Stage.CONTAIN or plan.action in CONTAINMENT_ACTIONS,
            recent_actions=recent_actions,
        )

    def decide_all(
        self,
        plans: Sequence[ActionPlan],
        incident: Incident,
        *,
        recent_actions: int | ActionCounter | None = None,
    ) -> list[RoeDecision]:
        """Decide a batch, counting the batch's own unattended actions against budgets.

        Deciding plans one by one against the same store count would let ten containments
        planned together all pass a budget of five; here each unattended decision uses up
        budget for the plans after it.

        Args:
            plans: the plans, in the order they would run.
            incident: the incident they answer.
            recent_actions: as for :meth:`decide`; an ``int`` applies to every action.

        Returns:
            One decision per plan, in order.
        """
        taken: dict[str, int] = {}
        decisions: list[RoeDecision] = []
        base = recent_actions if recent_actions is not None else self.counter
        for plan in plans:
            decision = self.decide(plan, incident, recent_actions=_plus(base, taken))
            if decision.verdict is Verdict.UNATTENDED:
                taken[plan.action] = taken.get(plan.action, 0) + 1
            decisions.append(decision)
        return decisions

    def evaluate(
        self,
        *,
        tenant: str,
        action: str,
        target: str,
        severity: SeverityId,
        target_id: str | None = None,
        users: Sequence[str] = (),
        containment: bool | None = None,
        recent_actions: int | ActionCounter | None = None,
    ) -> RoeDecision:
        """Decide from plain facts (what :meth:`decide` and ``stanch policy check`` use).

        Args:
            tenant: the plan's tenant.
            action: ``<capability>.<verb>``.
            target: the target as a human knows it (hostname, login, address).
            severity: the incident's severity.
            target_id: the vendor's id for the target, also checked against protected assets.
            users: logins checked against ``user_in_group`` conditions.
            containment: whether this is containment; defaults to membership of
                :data:`CONTAINMENT_ACTIONS`.
            recent_actions: see :meth:`decide`.

        Returns:
            The decision.
        """
        rules = self.rules
        if containment is None:
            containment = action in CONTAINMENT_ACTIONS
        rule = rules.actions.get(action)
        verb = action.partition(".")[2] or action
        sev = severity.name.lower()
        because: list[str] = []
        if rule is not None and rule.unattended_from is not None:
            threshold = rule.unattended_from.name.lower()
            because.append(f"severity {sev} (unattended from {threshold})")
        else:
            because.append(f"severity {sev}")
        approvals = rules.approval.approvals
        if rule is not None and rule.approvals is not None:
            approvals = rule.approvals
        timeout = rule.timeout if rule is not None and rule.timeout else rules.approval.timeout
        on_timeout: TimeoutOutcome = rules.approval.on_timeout
        if rule is not None and rule.on_timeout is not None:
            on_timeout = rule.on_timeout
        forbidden = False
        escalated = False

        def done(verdict: Verdict) -> RoeDecision:
            if verdict is Verdict.APPROVAL:
                outcome = f"approval by {approvals} of {rules.approvers.describe()}"
            else:
                outcome = verdict.value
            # Raised stakes (protected, a group, a spent budget) or containment: silence is no.
            safe: TimeoutOutcome = "deny" if containment or escalated else on_timeout
            return RoeDecision(
                verdict,
                f"{verb} {target}: {outcome}, because {' and '.join(because)}",
                approvals if verdict is Verdict.APPROVAL else 0,
                action=action,
                target=target,
                approvers=rules.approvers,
                timeout=timeout,
                on_timeout=safe,
                because=tuple(because),
                policy=self.name,
            )

        # A policy loaded for one tenant must never authorise another tenant's plan.
        if rules.tenant is not None and tenant != rules.tenant:
            because[:] = [f"policy {rules.tenant} does not cover tenant {tenant}"]
            return done(Verdict.FORBIDDEN)
        if rule is not None and rule.forbidden:
            because.append(f"{action} is forbidden for {self.name}")
            return done(Verdict.FORBIDDEN)

        protection = self._protection(target, target_id)
        if protection is not None:
            because.append(protection)
            escalated = True
            if rules.protected.on_match == "forbidden":
                return done(Verdict.FORBIDDEN)
            approvals = max(approvals, rules.protected.approvals)

        for condition in rule.conditions if rule is not None else ():
            patterns = rules.groups.get(condition.user_in_group, ())
            if any(_matches(u, patterns) for u in users):
                because.append(f"user in group {condition.user_in_group}")
                escalated = True
                if condition.forbidden:
                    forbidden = True
                elif condition.approvals is not None:
                    approvals = max(approvals, condition.approvals)
        if forbidden:
            return done(Verdict.FORBIDDEN)

        if rule is None:
            because.append(f"no rule for {action}")
            return done(Verdict.APPROVAL)
        if escalated or rule.unattended_from is None or severity < rule.unattended_from:
            return done(Verdict.APPROVAL)

        if rule.budget is not None:
            budget = rule.budget
            window = format_duration(budget.per)
            recent = recent_actions if recent_actions is not None else self.counter
            if recent is None:
                because.append("budget not checked (no count of recent actions)")
                escalated = True
                return done(Verdict.APPROVAL)
            used = recent if isinstance(recent, int) else recent(tenant, action, budget.per)
            if used >= budget.max:
                because.append(f"budget spent ({used} of {budget.max} per {window})")
                escalated = True
                return done(Verdict.APPROVAL)
            because.append(f"within budget ({used} of {budget.max} per {window})")
        return done(Verdict.UNATTENDED)

    def _protection(self, target: str, target_id: str | None) -> str | None:
        """Why the target is protected, or ``None``."""
        protected = self.rules.protected
        names = [target] if target_id in (None, target) else [target, target_id]
        for name in names:
            if (pattern := _matches(name, protected.hosts)) is not None:
                return f"protected host pattern {pattern}"
            if (pattern := _matches(name, protected.users)) is not None:
                return f"protected user pattern {pattern}"
            try:
                address = ipaddress.ip_address(name)
            except ValueError:
                continue
            for network in protected.ips:
                if address in network:
                    return f"protected range {network}"
        return None


class _ActionRecord(Protocol):
    @property
    def tenant(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...


# In flight or done: both already changed (or are changing) the tenant's estate.
_COUNTED = frozenset({"started", "executed"})


def count_recent_actions(
    rows: Iterable[_ActionRecord],
    *,
    tenant: str,
    action: str,
    window: timedelta,
    now: datetime | None = None,
) -> int:
    """Count store action rows that use up a blast-radius budget.

    Args:
        rows: rows shaped like :class:`flows.store.ActionRow` (any incidents).
        tenant: only this tenant's rows count.
        action: only this ``<capability>.<verb>`` counts.
        window: only rows started within this long before ``now`` count.
        now: the reference time (default: now, UTC).

    Returns:
        How many started or executed actions match.
    """
    since = (now or datetime.now(UTC)) - window
    total = 0
    for row in rows:
        started = row.started_at
        # SQLite hands back naive datetimes; the store writes UTC.
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        if (
            row.tenant == tenant
            and row.action == action
            and row.status in _COUNTED
            and started >= since
        ):
            total += 1
    return total
