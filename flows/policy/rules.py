"""The evaluator of the rules of engagement: a tenant's rules applied to plans.

:class:`RulesOfEngagement` applies a validated :class:`RulesFile` behind the
:class:`flows.policy.Policy` protocol; :func:`count_recent_actions` counts what budgets spend.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from flows.models import ActionPlan, Incident, Stage, Verdict
from flows.policy.decision import RoeDecision
from flows.policy.errors import PolicyError, PolicyIssue
from flows.policy.fields import (
    CONTAINMENT_ACTIONS,
    HOST_ACTIONS,
    ActionCounter,
    TimeoutOutcome,
)
from flows.policy.schema import RulesFile, _semantic_issues
from integrations.capabilities import Capability
from integrations.ocsf import SeverityId


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
        checked: apply the cross-field rules (off only for fail-safe rules with nobody
            to approve).

    Raises:
        PolicyError: the rules break a cross-field rule (see :func:`parse_policy`).
    """

    def __init__(
        self,
        rules: RulesFile,
        *,
        source: str | None = None,
        counter: ActionCounter | None = None,
        checked: bool = True,
    ) -> None:
        # checked=False only for fail-safe rules nobody may approve: their approvals are
        # unreachable on purpose (every request expires, denied).
        issues = _semantic_issues(rules) if checked else []
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
        asset_names: Mapping[str, Sequence[str]] | None = None,
    ) -> RoeDecision:
        """Decide one plan for one incident.

        Args:
            plan: what would be done.
            incident: why; its severity and the users it names feed the rules.
            recent_actions: for budgets, how many of ``plan.action`` already ran in the
                tenant within the budget window, or a counter to ask; defaults to the
                constructor's ``counter``.
            asset_names: the names and addresses the investigation found for each vendor
                id (:meth:`flows.models.Investigation.asset_names`); protected assets are
                matched against the target's. A host verb on a host it does not name, with
                no label but the id, needs approval: its name cannot be checked.

        Returns:
            The verdict, approvers needed and eligible, timeout and explanation.
        """
        identity = plan.capability is Capability.IDENTITY
        aliases = tuple((asset_names or {}).get(plan.target, ()))
        # "User in group" means the account acted on for identity verbs, and otherwise the
        # people the incident is about (the executive whose laptop would be isolated).
        users = (plan.target_label, plan.target, *aliases) if identity else tuple(incident.users)
        unnamed = plan.action in HOST_ACTIONS and not aliases and plan.target_label == plan.target
        return self.evaluate(
            tenant=plan.tenant,
            action=plan.action,
            target=plan.target_label,
            target_id=plan.target,
            aliases=aliases,
            unnamed=unnamed,
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
        asset_names: Mapping[str, Sequence[str]] | None = None,
    ) -> list[RoeDecision]:
        """Decide a batch, counting the batch's own unattended actions against budgets.

        Deciding plans one by one against the same store count would let ten containments
        planned together all pass a budget of five; here each unattended decision uses up
        budget for the plans after it.

        Args:
            plans: the plans, in the order they would run.
            incident: the incident they answer.
            recent_actions: as for :meth:`decide`; an ``int`` applies to every action.
            asset_names: as for :meth:`decide`.

        Returns:
            One decision per plan, in order.
        """
        taken: dict[str, int] = {}
        decisions: list[RoeDecision] = []
        base = recent_actions if recent_actions is not None else self.counter
        for plan in plans:
            decision = self.decide(
                plan, incident, recent_actions=_plus(base, taken), asset_names=asset_names
            )
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
        aliases: Sequence[str] = (),
        unnamed: bool = False,
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
            aliases: the target's names and addresses as the investigation found them, also
                checked against protected assets.
            unnamed: the target is a host known only by its vendor id, so protected host
                patterns cannot be checked: approval is needed.
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

        protection = self._protection([target, target_id or target, *aliases])
        if protection is not None:
            because.append(protection)
            escalated = True
            if rules.protected.on_match == "forbidden":
                return done(Verdict.FORBIDDEN)
            approvals = max(approvals, rules.protected.approvals)
        elif unnamed and (rules.protected.hosts or rules.protected.ips):
            because.append(f"host {target} has no known name to check against protected hosts")
            escalated = True

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

    def _protection(self, names: Sequence[str]) -> str | None:
        """Why a target known by ``names`` is protected, or ``None``."""
        protected = self.rules.protected
        for name in dict.fromkeys(names):
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
        rows: rows shaped like :class:`flows.record.ActionRow` (any incidents).
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
