"""The playbook planner: from a playbook and an incident, the action plans of each stage.

:func:`plan_playbook` changes nothing: it reads through the ``lookup`` it is given (the
investigation calls such as ``edr.find_host``) and returns :class:`ActionPlan` objects in
order, plus a note for every step it skipped, is waiting on, or cannot execute. Deciding
(:func:`decide`), approving and executing stay with the lifecycle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel

from flows.errors import StanchError
from flows.models import ActionPlan, Incident, Stage, Verdict
from flows.playbook.hunting import HUNT_ACTION, HuntArgumentError, hunt_call, hunt_summary
from flows.playbook.loader import CompiledStep, LoadedPlaybook
from flows.playbook.schema import ACTIONS, STAGE_ORDER, ActionSpec
from flows.playbook.templates import RenderError, build_context
from flows.policy import ActionCounter, RoeDecision, RulesOfEngagement
from integrations.capabilities import Capability

Lookup = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
"""``(action, args) -> result``: answers a read-only lookup such as ``edr.find_host``.

The result is an entity (a pydantic model or a dict), a list of them, or ``None`` for
"not found"; the engine turns it into plain data for ``steps.<id>.result``.
"""

NOT_EXECUTED: Mapping[str, str] = {
    "hunt": "not executed: a free-text hunt; run this search in the EDR or SIEM console "
    "(action edr.hunt runs one through the EDR)",
    "notify": "not executed: stanch has no chat capability for notifications yet; send it by hand",
    "manual": "not executed: a manual step for the analyst",
}
"""What a plan says about the steps stanch reports but does not run, by kind."""

NoteStatus = Literal["looked_up", "skipped", "waiting", "not_executed"]


class PlaybookRunError(StanchError):
    """A step could not be planned: a template failed, or gave a value of the wrong kind.

    Attributes:
        playbook: the playbook id.
        step: the step id.
        reason: what went wrong.
    """

    def __init__(self, playbook: str, step: str, reason: str) -> None:
        super().__init__(f"{playbook}: step {step}: {reason}")
        self.playbook = playbook
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class PlannedAction:
    """One plan and the playbook step it came from.

    Attributes:
        step: the step id.
        plan: the canonical plan.
        approval: ``required`` when the step always wants a human; see :func:`decide`.
        description: the step's description.
        after: the steps this one depends on: in its stage, it runs only once their
            plans have, and only if they all succeeded (Okta expires the password of an
            active account only, so an expiry waits for the unsuspend it follows).
    """

    step: str
    plan: ActionPlan
    approval: Literal["policy", "required"] = "policy"
    description: str | None = None
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepNote:
    """What happened to a step that planned no action (or to one item of it).

    Attributes:
        step: the step id.
        stage: its stage.
        status: ``looked_up``, ``skipped``, ``waiting`` (for ``confirm``) or
            ``not_executed`` (hunt, notify and manual steps).
        text: the rendered detail (what to hunt for, the question to confirm, why skipped).
    """

    step: str
    stage: Stage
    status: NoteStatus
    text: str


@dataclass
class PlaybookPlan:
    """What a playbook would do about one incident.

    Attributes:
        playbook: the playbook id.
        version: its version.
        incident_id: the incident.
        actions: every planned action, contain stage first, in step order.
        notes: what the other steps did or would need.
        results: ``steps.<id>`` as the templates saw it, per step.
    """

    playbook: str
    version: int
    incident_id: str
    actions: list[PlannedAction] = field(default_factory=list)
    notes: list[StepNote] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def plans(self, stage: Stage | None = None) -> list[ActionPlan]:
        """The plans of one stage (or all), in order: what the lifecycle authorises."""
        return [a.plan for a in self.actions if stage is None or a.plan.stage is stage]

    def planned(self, stage: Stage) -> list[PlannedAction]:
        """The planned actions of one stage, with their steps."""
        return [a for a in self.actions if a.plan.stage is stage]


def _data(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _data(v) for k, v in value.items()}
    return value


class _Run:
    def __init__(
        self,
        playbook: LoadedPlaybook,
        incident: Incident,
        lookup: Lookup,
        confirmed: frozenset[str],
    ) -> None:
        self.playbook = playbook
        self.incident = incident
        self.lookup = lookup
        self.confirmed = confirmed
        self.steps: dict[str, dict[str, Any]] = {}
        self.seen: dict[tuple[str, str], str] = {}
        self.out = PlaybookPlan(playbook.id, playbook.version, incident.id)

    def fail(self, step: CompiledStep, reason: str) -> PlaybookRunError:
        return PlaybookRunError(self.playbook.id, step.id, reason)

    def render(self, step: CompiledStep, name: str, context: Mapping[str, Any]) -> Any:
        try:
            return step.templates[name].render(context)
        except RenderError as exc:
            raise self.fail(step, f"{name}: {exc}") from exc

    def note(self, step: CompiledStep, status: NoteStatus, text: str) -> None:
        self.out.notes.append(StepNote(step.id, step.stage, status, text))

    def skip(self, step: CompiledStep, why: str) -> None:
        self.steps[step.id] = {"result": None, "missing": [], "skipped": True}
        self.note(step, "skipped", why)

    def items(self, step: CompiledStep, context: Mapping[str, Any]) -> list[Any]:
        if "for_each" not in step.templates:
            return [None]
        value = self.render(step, "for_each", context)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.fail(step, f"for_each gave {type(value).__name__}, not a list")
        return list(value)

    def arguments(
        self, step: CompiledStep, spec: ActionSpec, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for name, value in step.step.args.items():
            if isinstance(value, str):
                value = self.render(step, f"args.{name}", context)
            if not spec.params[name].accepts(value):
                raise self.fail(
                    step,
                    f"args.{name} gave {value!r}; {spec.name} takes {spec.params[name].type_name}",
                )
            args[name] = value
        return args

    async def run(self) -> PlaybookPlan:
        for stage in STAGE_ORDER:
            for step in self.playbook.stages.get(stage, ()):
                await self.step(step)
        self.out.results = self.steps
        return self.out

    async def step(self, step: CompiledStep) -> None:
        skipped = sorted(d for d in step.depends if self.steps.get(d, {}).get("skipped", True))
        if skipped:
            self.skip(step, f"skipped: {', '.join(skipped)} did not run")
            return
        base = build_context(self.incident, self.steps)
        if step.step.confirm is not None and step.id not in self.confirmed:
            question = self.render(step, "confirm", base)
            self.steps[step.id] = {"result": None, "missing": [], "skipped": True}
            self.note(step, "waiting", f"waiting for an analyst to confirm: {question}")
            return
        results: list[Any] = []
        missing: list[Any] = []
        items = self.items(step, base)
        # An empty loop ran and found nothing; only a false ``when`` skips a step.
        ran = not items
        if not items:
            self.note(step, "skipped", "nothing to do: for_each gave no items")
        for item in items:
            context = {**base, "item": item} if "for_each" in step.templates else base
            if "when" in step.templates and not self.render(step, "when", context):
                continue
            ran = True
            if step.action is not None and step.action.lookup:
                found = _data(
                    await self.lookup(step.action.name, self.arguments(step, step.action, context))
                )
                (results if found is not None else missing).append(
                    found if found is not None else item
                )
            elif step.action is not None:
                self.plan(step, step.action, context, results)
            else:
                self.report(step, context)
        if not ran:
            self.skip(step, "skipped: when was false")
            return
        looped = "for_each" in step.templates
        result: Any = results if looped else (results[0] if results else None)
        self.steps[step.id] = {"result": result, "missing": missing, "skipped": False}
        if step.action is not None and step.action.name == HUNT_ACTION and items:
            self.note(step, "looked_up", hunt_summary(results))
        elif step.action is not None and step.action.lookup and items:
            self.note(step, "looked_up", f"{len(results)} found, {len(missing)} not found")

    def plan(
        self,
        step: CompiledStep,
        spec: ActionSpec,
        context: Mapping[str, Any],
        results: list[Any],
    ) -> None:
        args = self.arguments(step, spec, context)
        assert spec.target is not None
        target = args.pop(spec.target)
        if not isinstance(target, str) or not target:
            raise self.fail(step, f"args.{spec.target} gave {target!r}, not a target")
        label = self.render(step, "label", context) if "label" in step.templates else target
        earlier = self.seen.get((spec.name, target))
        if earlier is not None:
            self.note(step, "skipped", f"{spec.name} {label}: already planned by {earlier}")
            return
        self.seen[(spec.name, target)] = step.id
        plan = ActionPlan(
            tenant=self.incident.tenant,
            incident_id=self.incident.id,
            capability=spec.capability,
            verb=spec.verb,
            target=target,
            target_label=str(label),
            parameters=args,
            stage=step.stage,  # the loader allows only contain and remediate for actions
        )
        self.out.actions.append(
            PlannedAction(
                step.id,
                plan,
                step.step.approval,
                step.step.description,
                tuple(sorted(step.depends)),
            )
        )
        results.append(plan.model_dump(mode="json"))

    def report(self, step: CompiledStep, context: Mapping[str, Any]) -> None:
        kind = step.step.kind
        text = str(self.render(step, kind, context))
        if kind == "notify" and "message" in step.templates:
            text = f"{text}: {self.render(step, 'message', context)}"
        self.note(step, "not_executed", f"{text} ({NOT_EXECUTED[kind]})")


async def plan_playbook(
    playbook: LoadedPlaybook,
    incident: Incident,
    lookup: Lookup,
    *,
    confirmed: frozenset[str] | set[str] = frozenset(),
) -> PlaybookPlan:
    """Plan what ``playbook`` does about ``incident``, stage by stage, changing nothing.

    Steps run in stage order (investigate, contain, remediate, report) and, within a stage,
    in file order after their dependencies. A step whose dependency was skipped is skipped;
    ``when`` is checked per ``for_each`` item; a step with ``confirm`` is only planned when
    its id is in ``confirmed``.

    Args:
        playbook: a loaded playbook.
        incident: the incident to answer.
        lookup: answers the investigation steps (read-only calls only).
        confirmed: ids of ``confirm`` steps an analyst has confirmed.

    Returns:
        The plans in order, with notes for every step that planned nothing.

    Raises:
        PlaybookRunError: a template failed at run time or gave a value of the wrong kind.
    """
    return await _Run(playbook, incident, lookup, frozenset(confirmed)).run()


def adapter_lookup(adapters: Mapping[Capability, Any]) -> Lookup:
    """A :data:`Lookup` that calls the capability adapters, refusing anything not read-only.

    Args:
        adapters: the adapter answering each capability (``Integrations.adapter``'s map).
    """

    async def lookup(action: str, args: Mapping[str, Any]) -> Any:
        spec = ACTIONS.get(action)
        if spec is None or not spec.lookup:
            raise PlaybookRunError("lookup", action, f"{action} is not a read-only lookup")
        if action == HUNT_ACTION:
            try:
                indicator, since = hunt_call(args)
            except HuntArgumentError as exc:
                raise PlaybookRunError("lookup", action, str(exc)) from exc
            return await adapters[spec.capability].hunt(indicator, since=since)
        return await getattr(adapters[spec.capability], spec.verb)(**args)

    return lookup


def decide(
    policy: RulesOfEngagement,
    planned: Sequence[PlannedAction],
    incident: Incident,
    *,
    recent_actions: int | ActionCounter | None = None,
    asset_names: Mapping[str, Sequence[str]] | None = None,
) -> list[RoeDecision]:
    """Policy's decision for each planned action, tightened where the step requires approval.

    The policy is authoritative: ``approval: required`` turns an unattended verdict into an
    approval (never the other way), and a forbidden verdict stays forbidden.

    Args:
        policy: the tenant's rules of engagement.
        planned: the actions, in the order they would run (one stage at a time).
        incident: the incident they answer.
        recent_actions: passed to :meth:`RulesOfEngagement.decide_all` for budgets.
        asset_names: passed to :meth:`RulesOfEngagement.decide_all` for protected assets.

    Returns:
        One decision per planned action, in order.
    """
    decisions = policy.decide_all(
        [p.plan for p in planned],
        incident,
        recent_actions=recent_actions,
        asset_names=asset_names,
    )
    tightened: list[RoeDecision] = []
    for action, decision in zip(planned, decisions, strict=True):
        if action.approval == "required" and decision.verdict is Verdict.UNATTENDED:
            rule = policy.rules.actions.get(action.plan.action)
            count = (rule.approvals if rule else None) or policy.rules.approval.approvals
            because = (*decision.because, f"playbook step {action.step} requires approval")
            verb = action.plan.verb
            reason = (
                f"{verb} {decision.target}: approval by {count} of "
                f"{decision.approvers.describe()}, because {' and '.join(because)}"
            )
            decision = replace(
                decision,
                verdict=Verdict.APPROVAL,
                reason=reason,
                approvals_required=count,
                because=because,
                on_timeout="deny",
            )
        tightened.append(decision)
    return tightened
