"""The policy file's schema (pydantic, ``extra="forbid"``) and the checks across fields."""

from __future__ import annotations

import fnmatch
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flows.policy.fields import (
    CONTAINMENT_ACTIONS,
    ActionName,
    CliOperator,
    Count,
    Duration,
    Glob,
    GroupName,
    Network,
    Severity,
    SlackGroupId,
    SlackUserId,
    TenantName,
    TimeoutOutcome,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Approvers(_Strict):
    """Who may approve, and through which channels.

    Attributes:
        slack_users: Slack user ids allowed to approve.
        slack_group: a Slack user group id whose members may approve.
        slack_group_handle: the group's handle, for explanations (``soc-leads``).
        cli: whether ``stanch approve`` at a terminal counts as an approval channel (off
            unless the file says so).
        cli_users: the operators (``user@host``, glob patterns, case-insensitive) whose
            ``stanch approve``/``deny`` count for this tenant; ``cli: true`` needs at least
            one, so that no operator can decide every tenant's requests by default.
        prefect_ui: whether the Prefect UI's resume form does; off because anyone with Prefect
            access could use it.
    """

    slack_users: tuple[SlackUserId, ...] = ()
    slack_group: SlackGroupId | None = None
    slack_group_handle: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")] | None = None
    cli: bool = False
    cli_users: tuple[CliOperator, ...] = ()
    prefect_ui: bool = False

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if self.cli and not self.cli_users:
            raise PydanticCustomError(
                "no-cli-users",
                "cli: true but no cli_users: list the operators (user@host, globs allowed) "
                "whose stanch approve counts, or set cli: false",
            )
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

    def cli_operator_allowed(self, operator: str) -> bool:
        """Whether ``operator`` (``user@host``) may decide through the CLI."""
        return self.cli and any(
            fnmatch.fnmatchcase(operator.lower(), pattern.lower()) for pattern in self.cli_users
        )

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


# Case service levels and closing by policy (kept apart from the containment rules above).
class SlaTargets(_Strict):
    """How soon, from the first alert, each clock must be reached; unset means no target.

    Attributes:
        acknowledge: until a person first touches the case (a decision, an assignment,
            a note, a closure).
        contain: until the first containment action executes.
        resolve: until the case is closed.
    """

    acknowledge: Duration | None = None
    contain: Duration | None = None
    resolve: Duration | None = None


class Sla(_Strict):
    """Service-level targets of a tenant's incidents, by severity.

    Attributes:
        targets: per incident severity (``critical``, ``high`` ...); severities not
            listed have no SLA.
        warn_before: how long before a deadline the sweep warns in the incident's Slack
            thread and the channel.
    """

    targets: dict[Severity, SlaTargets] = Field(default_factory=dict)
    warn_before: Duration = timedelta(minutes=5)


class AutoCloseRule(_Strict):
    """A kind of incident the tenant lets stanch close on its own (``policy:auto-close``).

    Attributes:
        when: ``below-triage-threshold`` (intake recorded the incident but its score never
            reached the tenant's triage threshold, for ``after``), or ``benign-verdict``
            (investigation found it benign; with ``playbook``, only when that playbook
            handled it, ``built-in`` naming the built-in response).
        playbook: restricts ``benign-verdict`` to one playbook.
        after: for ``below-triage-threshold``, how long without a new alert first.
        disposition: what the closure records (never ``duplicate``).
    """

    when: Literal["below-triage-threshold", "benign-verdict"]
    playbook: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$")] | None = None
    after: Duration = timedelta(hours=1)
    disposition: Literal["true-positive", "benign-true-positive", "false-positive"]

    @model_validator(mode="after")
    def _playbook_for_verdicts(self) -> AutoCloseRule:
        if self.playbook is not None and self.when != "benign-verdict":
            raise PydanticCustomError(
                "invalid-value", "playbook only narrows a benign-verdict rule"
            )
        return self


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
        sla: service-level targets per severity.
        auto_close: which incidents stanch may close itself.
    """

    version: Literal[1]
    tenant: TenantName | None = None
    approvers: Approvers
    approval: ApprovalDefaults = ApprovalDefaults()
    groups: dict[GroupName, tuple[Glob, ...]] = Field(default_factory=dict)
    protected: Protected = Protected()
    actions: dict[ActionName, ActionRule] = Field(default_factory=dict)
    sla: Sla = Sla()
    auto_close: tuple[AutoCloseRule, ...] = ()


_Loc = tuple[str, ...]

_FIELD_NAMES = frozenset(
    name
    for model in (
        RulesFile,
        Approvers,
        ApprovalDefaults,
        Budget,
        Condition,
        ActionRule,
        Protected,
        Sla,
        SlaTargets,
        AutoCloseRule,
    )
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
