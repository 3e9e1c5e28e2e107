"""Authority, then action: policy's verdict on each plan, approval where needed, execution.

:class:`Responder` takes an incident's planned actions for one stage: forbidden and denied
plans are recorded as refused, authorised ones run as tasks (containment all-or-none in one
Prefect transaction, whose rollback is :mod:`flows.respond.compensation`), and actions an
earlier run already carried out are replayed from the store instead of being decided again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, cast

from prefect import tags
from prefect.transactions import AsyncTransaction, atransaction

from flows import wiring
from flows.approval import AUTOMATION_REQUESTER, ApprovalGate, new_approval_request
from flows.models import ActionPlan, ActionResult, ActionStatus, Incident, Stage, Verdict, utcnow
from flows.playbook import PlannedAction, decide
from flows.policy import RoeDecision, RulesOfEngagement, approval_terms
from flows.record import Ledger, Store
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
        # Containment steps run in one transaction; this responder's copy of the step task
        # carries the rollback hook that undoes a step when the stage fails half-way.
        self._contain_step = contain_action.with_options()
        # Prefect awaits a coroutine hook inside an async transaction; its annotation
        # names only the synchronous kind.
        self._contain_step.on_rollback_hooks = [cast(Any, self._compensate)]

    def tags(self, stage: Stage, vendor: str) -> list[str]:
        """The task-run tags of one stage's call to one vendor."""
        return [f"stage:{stage.value}", f"vendor:{vendor}", f"tenant:{self.incident.tenant}"]

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
            request = new_approval_request(
                incident_id=self.incident.id,
                tenant=self.incident.tenant,
                flow_run_id=self.flow_run_id,
                plans=needs_approval,
                stage=stage.value,
                reasons={p.sha256: verdicts[p.sha256].reason for p in needs_approval},
                incident_title=self.incident.title,
                requester=self.requester,
                excluded=tuple(self.incident.users),
                terms=approval_terms(
                    [verdicts[p.sha256] for p in needs_approval],
                    longest=self.settings.approval_timeout_cap,
                ),
            )
            outcome = await self.gate.request(request, self.store)
            self.decisions.append(outcome.model_dump(mode="json"))
            notes.append(f"approval {outcome.approval_id}: {outcome.status}")
            for plan in needs_approval:
                if plan.sha256 in outcome.approved:
                    authorised.append((plan, Verdict.APPROVAL, outcome.approvers))
                else:
                    await self._refuse(
                        plan,
                        Verdict.APPROVAL,
                        ActionStatus.DENIED,
                        f"{outcome.status}: {outcome.reason}",
                    )
        if stage == Stage.CONTAIN:
            results = await self._execute_all_or_none(stage, authorised)
        else:
            results = await asyncio.gather(
                *(self._execute(stage, plan, verdict, by) for plan, verdict, by in authorised)
            )
        failed = [r for r in results if r.status == ActionStatus.FAILED]
        if failed:
            notes.append(f"failed: {', '.join(r.plan.action for r in failed)}")
        notes.append(f"{sum(r.status != ActionStatus.FAILED for r in results)} action(s) done")
        return notes

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
        self, stage: Stage, authorised: Sequence[tuple[ActionPlan, Verdict, list[str]]]
    ) -> list[ActionResult]:
        """Run the containment steps in one Prefect transaction: all hold, or none does.

        The steps run concurrently and never fail as tasks (see ``contain_action``), so
        the transaction rolls back only here, once every step has finished: then each
        step that contained something is undone by its rollback hook, and recorded.

        Raises:
            ContainmentRolledBack: a step failed and the others were rolled back.
        """
        async with atransaction():
            results = list(
                await asyncio.gather(
                    *(
                        self._execute(stage, plan, verdict, by, step=self._contain_step)
                        for plan, verdict, by in authorised
                    )
                )
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
            with tags(*self.tags(stage, adapter.vendor)):
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
