"""Authority, then action: policy's verdict on each plan, approval where needed, execution.

:class:`Responder` takes an incident's planned actions for one stage: forbidden and denied
plans are recorded as refused, authorised ones run as tasks (containment all-or-none in one
Prefect transaction, whose rollback is :mod:`flows.respond.compensation`), and actions an
earlier run already carried out are replayed from the store instead of being decided again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from prefect.transactions import AsyncTransaction, atransaction

from flows import wiring
from flows.approval import (
    AUTOMATION_REQUESTER,
    ApprovalContext,
    ApprovalGate,
    ApprovalOutcome,
    new_approval_request,
)
from flows.approval import approval_context as evidence_for
from flows.models import (
    ActionPlan,
    ActionResult,
    ActionStatus,
    Incident,
    Investigation,
    Stage,
    Verdict,
    utcnow,
)
from flows.playbook import PlannedAction, decide
from flows.policy import RoeDecision, RulesOfEngagement, approval_terms
from flows.record import Ledger, Store, events
from flows.respond.compensation import compensate
from flows.settings import StanchSettings
from flows.tasks import contain_action, execute_action, failed_result


class ContainmentRolledBack(Exception):
    """A containment step failed, so the stage's completed steps were undone."""


class Responder:
    """Decides and carries out one incident's action plans, stage by stage.

    Args:
        incident: the incident acted for (the lifecycle replaces it when alerts join).
        settings: approval timeout and the like.
        store: where claims, results and approvals are recorded.
        integrations: the adapters the plans run against.
        gate: the approval channel.
        policy: the tenant's rules of engagement.
        flow_run_id: the run that asks, for approval requests.
        requester: who caused the run (``cli:<user>@<host>``, ``slack:<id>``,
            ``automation:<what>``); they may not approve its requests.

    Attributes:
        actions: every result so far, in the order they finished.
        decisions: every approval outcome so far, as JSON.
        investigation: what investigation found (the lifecycle sets it); its verdict and
            score go into approval requests as evidence.
        stopped: the approval an analyst denied as a false positive, which stopped the
            response: nothing more is authorised for the incident.
    """

    def __init__(
        self,
        incident: Incident,
        *,
        settings: StanchSettings,
        store: Store,
        integrations: wiring.Integrations,
        gate: ApprovalGate,
        policy: RulesOfEngagement,
        flow_run_id: str | None,
        requester: str = AUTOMATION_REQUESTER,
    ) -> None:
        self.incident = incident
        self.requester = requester
        self.settings = settings
        self.store = store
        self.integrations = integrations
        self.gate = gate
        self.policy = policy
        self.flow_run_id = flow_run_id
        self.actions: list[ActionResult] = []
        self.decisions: list[dict[str, Any]] = []
        self.playbook: str | None = None  # the playbook planning, for events
        self.investigation = Investigation()
        self.stopped: ApprovalOutcome | None = None
        # Containment steps run in one transaction; this responder's copy of the step task
        # carries the rollback hook that undoes a step when the stage fails half-way.
        self._contain_step = contain_action.with_options()
        # Prefect awaits a coroutine hook inside an async transaction; its annotation
        # names only the synchronous kind.
        self._contain_step.on_rollback_hooks = [cast(Any, self._compensate)]

    async def authorise_and_execute(
        self,
        stage: Stage,
        planned: Sequence[PlannedAction],
        *,
        asset_names: Mapping[str, Sequence[str]] | None = None,
    ) -> list[str]:
        """Ask policy about each plan, get approval where needed, run what is authorised.

        A playbook step that requires approval tightens policy's verdict, never loosens it.
        Forbidden and denied plans are recorded (store and ledger) as refused; authorised
        ones run concurrently as tasks. ``asset_names`` (what the investigation found each
        target to be called) is what protected assets are matched against. Returns notes
        for the stage record.
        """
        notes: list[str] = []
        planned = await self._replay_done(planned, notes)
        plans = [p.plan for p in planned]
        decided = await self._decide_within_budgets(planned, asset_names)
        verdicts = {p.sha256: d for p, d in zip(plans, decided, strict=True)}
        if self.stopped is not None:
            # Denied as a false positive earlier: nothing more is asked or run.
            for plan in plans:
                await self._refuse(
                    plan, verdicts[plan.sha256].verdict, ActionStatus.DENIED, _denial(self.stopped)
                )
            return [f"not run: the response was stopped ({len(plans)} action(s) refused)"]
        authorised: list[tuple[ActionPlan, Verdict, list[str]]] = []
        needs_approval: list[ActionPlan] = []
        for plan in plans:
            decision = verdicts[plan.sha256]
            if decision.verdict == Verdict.FORBIDDEN:
                await self._refuse(plan, Verdict.FORBIDDEN, ActionStatus.FORBIDDEN, decision.reason)
            elif decision.verdict == Verdict.UNATTENDED:
                authorised.append((plan, Verdict.UNATTENDED, ["policy:unattended"]))
            else:
                needs_approval.append(plan)
        if needs_approval:
            outcome = await self._ask(stage, needs_approval, verdicts)
            self.decisions.append(outcome.model_dump(mode="json"))
            notes.append(f"approval {outcome.approval_id}: {outcome.status}")
            if outcome.stop_response:
                notes.append(await self._stop(outcome))
            for plan in needs_approval:
                if plan.sha256 in outcome.approved:
                    authorised.append((plan, Verdict.APPROVAL, outcome.approvers))
                else:
                    await self._refuse(
                        plan,
                        Verdict.APPROVAL,
                        ActionStatus.DENIED,
                        _denial(outcome),
                    )
        if self.stopped is not None:
            # A false positive: even the plans policy would run unattended stay undone.
            for plan, verdict, _ in authorised:
                await self._refuse(plan, verdict, ActionStatus.DENIED, _denial(self.stopped))
            authorised = []
        order = _Order(planned)
        if stage == Stage.CONTAIN:
            results = await self._execute_all_or_none(stage, authorised, order, notes)
        else:
            results = await order.run(
                authorised,
                lambda plan, verdict, by: self._execute(stage, plan, verdict, by),
                notes,
            )
        failed = [r for r in results if r.status == ActionStatus.FAILED]
        if failed:
            notes.append(f"failed: {', '.join(r.plan.action for r in failed)}")
        notes.append(f"{sum(r.status != ActionStatus.FAILED for r in results)} action(s) done")
        return notes

    async def _ask(
        self,
        stage: Stage,
        plans: list[ActionPlan],
        verdicts: dict[str, RoeDecision],
    ) -> ApprovalOutcome:
        """File one approval request for ``plans``, with the evidence, and wait for it."""
        vendors = {c.value: v for c, v in self.integrations.vendors.items()}
        request = new_approval_request(
            incident_id=self.incident.id,
            tenant=self.incident.tenant,
            flow_run_id=self.flow_run_id,
            plans=plans,
            stage=stage.value,
            reasons={p.sha256: verdicts[p.sha256].reason for p in plans},
            incident_title=self.incident.title,
            requester=self.requester,
            excluded=tuple(self.incident.users),
            terms=approval_terms(
                [verdicts[p.sha256] for p in plans],
                longest=self.settings.approval_timeout_cap,
            ),
            context=self.evidence(vendors),
        )
        if await self.store.get_approval(request.id) is None:
            events.approval_requested(
                self.incident,
                self.playbook,
                approval_id=request.id,
                stage=stage.value,
                sha256s=request.sha256s,
                actions=[p.action for p in plans],
                deadline=request.deadline.isoformat(),
            )
        outcome = await self.gate.request(request, self.store)
        events.approval_decided(
            self.incident,
            self.playbook,
            approval_id=outcome.approval_id,
            status=outcome.status,
            approved=outcome.approved,
            approvers=outcome.approvers,
            channel=outcome.channel,
        )
        return outcome

    def evidence(self, vendors: dict[str, str]) -> ApprovalContext:
        """What the approver is shown: the incident's alerts and what investigation found."""
        return evidence_for(self.incident, self.investigation, vendors)

    async def _stop(self, outcome: ApprovalOutcome) -> str:
        """Stop the response: record the analyst's false-positive call on the incident."""
        self.stopped = outcome
        by = ", ".join(outcome.approvers) or "an analyst"
        await self.store.propose_disposition(
            self.incident.id, "false_positive", by=by, reason=outcome.reason
        )
        return f"response stopped: denied as a false positive by {by}"

    async def _decide_within_budgets(
        self,
        planned: Sequence[PlannedAction],
        asset_names: Mapping[str, Sequence[str]] | None,
    ) -> list[RoeDecision]:
        """Policy's decisions, with each unattended budgeted plan's unit reserved.

        Budgets are counted over each rule's own window (``budget.per``) from the store's
        claims, not counting claims these very plans hold (a re-run's). Then every plan
        policy would run unattended under a budget reserves its unit atomically
        (:meth:`Store.reserve_budget`): a concurrent incident of the tenant that took the
        last unit meanwhile turns this one into an approval, never a second unattended run.
        """
        plans = [p.plan for p in planned]
        keys = {p.idempotency_key for p in plans}
        windows = {
            p.action: rule.budget.per
            for p in plans
            if (rule := self.policy.rules.actions.get(p.action)) is not None and rule.budget
        }
        spent = {
            action: await self.store.budget_spent(
                self.incident.tenant, action, window, excluding=keys
            )
            for action, window in windows.items()
        }

        def counter(tenant: str, action: str, window: timedelta) -> int:
            return spent.get(action, 0) if tenant == self.incident.tenant else 0

        decided = decide(
            self.policy, planned, self.incident, recent_actions=counter, asset_names=asset_names
        )
        for i, (item, decision) in enumerate(zip(planned, decided, strict=True)):
            rule = self.policy.rules.actions.get(item.plan.action)
            if decision.verdict != Verdict.UNATTENDED or rule is None or rule.budget is None:
                continue
            granted, used = await self.store.reserve_budget(
                item.plan, max_count=rule.budget.max, window=rule.budget.per
            )
            if not granted:
                # Spent meanwhile by another incident: policy's answer for a spent budget.
                decided[i] = self.policy.decide(
                    item.plan, self.incident, recent_actions=used, asset_names=asset_names
                )
        return decided

    async def _replay_done(
        self, planned: Sequence[PlannedAction], notes: list[str]
    ) -> list[PlannedAction]:
        """Take out the plans an earlier run of this incident already carried out.

        A re-run (after a crash, or ``stanch rerun``) replays their recorded results: they
        are not put to policy or approval again, whose answer may have changed since (a
        budget now spent by the action itself). Returns the plans still to decide.
        """
        done = {
            row.idempotency_key: row
            for row in await self.store.actions(self.incident.id)
            if row.status in (ActionStatus.EXECUTED.value, ActionStatus.ALREADY_DONE.value)
            and row.result is not None
        }
        remaining: list[PlannedAction] = []
        for item in planned:
            row = done.get(item.plan.idempotency_key)
            if row is None or row.plan_sha256 != item.plan.sha256:
                remaining.append(item)
                continue
            result = ActionResult.model_validate(row.result)
            # Idempotent: restores the entry if a crash fell between store and ledger.
            await Ledger(self.store).append_action(result)
            self.actions.append(result)
        if len(remaining) < len(planned):
            notes.append(f"{len(planned) - len(remaining)} action(s) already done, replayed")
        return remaining

    async def _execute_all_or_none(
        self,
        stage: Stage,
        authorised: Sequence[tuple[ActionPlan, Verdict, list[str]]],
        order: _Order,
        notes: list[str],
    ) -> list[ActionResult]:
        """Run the containment steps in one Prefect transaction: all hold, or none does.

        The steps run concurrently and never fail as tasks (see ``contain_action``), so
        the transaction rolls back only here, once every step has finished: then each
        step that contained something is undone by its rollback hook, and recorded.

        Raises:
            ContainmentRolledBack: a step failed and the others were rolled back.
        """
        async with atransaction():
            results = await order.run(
                authorised,
                lambda plan, verdict, by: self._execute(
                    stage, plan, verdict, by, step=self._contain_step
                ),
                notes,
            )
            failed = [r for r in results if r.status == ActionStatus.FAILED]
            if failed:
                raise ContainmentRolledBack(
                    f"{', '.join(f'{r.plan.action} {r.plan.target_label}' for r in failed)} "
                    f"failed; the stage's other containment was rolled back"
                )
        return results

    async def _execute(
        self,
        stage: Stage,
        plan: ActionPlan,
        verdict: Verdict,
        approved_by: list[str],
        *,
        step: Any = execute_action,
    ) -> ActionResult:
        adapter = self.integrations.adapter(plan.capability)
        started = utcnow()
        try:
            # Named `[<stage>] <action> <target> · <vendor>` (flows.tasks.in_stage); no
            # tags, each would cost a concurrency lease.
            result: ActionResult = await step(
                plan,
                plan.sha256,
                adapter,
                self.store,
                verdict=verdict,
                approved_by=approved_by,
            )
        except Exception as exc:
            # Recorded, not swallowed: the stage is marked failed and the run ends Failed.
            result = failed_result(
                plan,
                verdict=verdict,
                approved_by=approved_by,
                vendor=adapter.vendor,
                error=f"{type(exc).__name__}: {exc}",
                started=started,
            )
        self.actions.append(result)
        events.action_finished(self.incident, self.playbook, result)
        return result

    async def _refuse(
        self, plan: ActionPlan, verdict: Verdict, status: ActionStatus, why: str
    ) -> None:
        result = ActionResult(
            plan=plan,
            plan_sha256=plan.sha256,
            verdict=verdict,
            status=status,
            error=why,
            started_at=utcnow(),
            finished_at=utcnow(),
        )
        if await self.store.finish_action(result):
            await Ledger(self.store).append_action(result)
        self.actions.append(result)
        events.action_finished(self.incident, self.playbook, result)

    async def _compensate(self, transaction: AsyncTransaction) -> None:
        """Rollback hook of one containment step: undo what it changed (see :func:`compensate`)."""
        result = transaction.get("result", None)
        if isinstance(result, ActionResult):
            self.actions.extend(
                await compensate(
                    result,
                    store=self.store,
                    integrations=self.integrations,
                    incident_id=self.incident.id,
                )
            )


Authorised = tuple[ActionPlan, Verdict, list[str]]
_SUCCEEDED = (ActionStatus.EXECUTED, ActionStatus.ALREADY_DONE)


class _Order:
    """Runs a stage's authorised plans in the order their steps' ``depends_on`` asks.

    Plans whose steps depend on nothing still pending run together; a plan runs only
    once the plans of the steps it depends on have, and not at all if the one for the
    same target (or, when none shares its target, any of them) did not succeed or was
    never authorised. Its stage note says so.
    """

    def __init__(self, planned: Sequence[PlannedAction]) -> None:
        self._step = {p.plan.sha256: p.step for p in planned}
        self._after = {p.plan.sha256: p.after for p in planned}
        self._targets: dict[str, set[str]] = {}
        for p in planned:
            self._targets.setdefault(p.step, set()).add(p.plan.target)
        # (step, target) of every plan of this stage: each counts as unsuccessful until
        # it has run and succeeded.
        self._open = {(p.step, p.plan.target) for p in planned}

    def _blocked_by(self, plan: ActionPlan, unsuccessful: set[tuple[str, str]]) -> list[str]:
        blocked = []
        for dep in self._after[plan.sha256]:
            targets = self._targets.get(dep, set())
            if plan.target in targets:
                if (dep, plan.target) in unsuccessful:
                    blocked.append(dep)
            elif any((dep, t) in unsuccessful for t in targets):
                blocked.append(dep)
        return sorted(blocked)

    async def run(
        self,
        authorised: Sequence[Authorised],
        execute: Callable[[ActionPlan, Verdict, list[str]], Awaitable[ActionResult]],
        notes: list[str],
    ) -> list[ActionResult]:
        """Execute ``authorised`` wave by wave; return the results in completion order."""
        waiting = list(authorised)
        # Denied and forbidden plans never run: they stay unsuccessful.
        unsuccessful = set(self._open)
        results: list[ActionResult] = []
        while waiting:
            pending = {self._step[plan.sha256] for plan, _, _ in waiting}
            wave = [a for a in waiting if not set(self._after[a[0].sha256]) & pending]
            if not wave:  # the loader refuses dependency cycles; run the rest regardless
                wave = waiting
            waiting = [a for a in waiting if a not in wave]
            runnable = []
            for plan, verdict, by in wave:
                blocked = self._blocked_by(plan, unsuccessful)
                if blocked:
                    notes.append(
                        f"not run: {plan.action} {plan.target_label} "
                        f"({', '.join(blocked)} did not succeed)"
                    )
                else:
                    runnable.append((plan, verdict, by))
            done = await asyncio.gather(*(execute(p, v, b) for p, v, b in runnable))
            for result in done:
                if result.status in _SUCCEEDED:
                    unsuccessful.discard((self._step[result.plan.sha256], result.plan.target))
            results.extend(done)
        return results


def _denial(outcome: ApprovalOutcome) -> str:
    """Why a plan did not run, as the report and the ledger say it."""
    who = ", ".join(outcome.approvers) or "nobody"
    if outcome.stop_response:
        return f"denied as a false positive by {who} (response stopped): {outcome.reason}"
    if outcome.status in ("denied", "partial"):
        return f"denied by {who}: {outcome.reason}"
    return f"{outcome.status}: {outcome.reason}"
