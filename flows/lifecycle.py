"""The ``handle-incident`` flow: detect → investigate → contain → remediate → report.

One flow run per incident, named after it. Each stage's vendor calls are coarse async
tasks tagged ``stage:<name>``, ``vendor:<vendor>`` and ``tenant:<id>``. Containment and
remediation go through policy and, where policy says so, an analyst's approval; every
action is recorded in the store under its idempotency key.
"""

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, cast

from prefect import flow, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import Pause
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.transactions import AsyncTransaction, atransaction

from flows import wiring
from flows.approvals import ApprovalGate, PrefectPauseGate, new_approval_request
from flows.joins import joined_alerts
from flows.ledger import Ledger
from flows.metrics import clocks_of
from flows.models import (
    ActionPlan,
    ActionResult,
    ActionStatus,
    Incident,
    IncidentOutcome,
    Investigation,
    Stage,
    StageRecord,
    Verdict,
    utcnow,
)
from flows.playbook import (
    LoadedPlaybook,
    PlannedAction,
    PlaybookPlan,
    adapter_lookup,
    decide,
    load_playbooks,
    plan_playbook,
    route,
)
from flows.policy import playbook_directory, policy_directory
from flows.report import publish_report
from flows.response import assess, containment_plans, remediation_plans
from flows.roe import RoeDecision, RulesOfEngagement, count_recent_actions, policy_for_tenant
from flows.settings import StanchSettings, load_settings
from flows.slack_summary import post_incident_summary, slack_chat
from flows.store import Store, open_store
from flows.tasks import contain_action, execute_action, failed_result, find_host, find_user


class IncidentIncomplete(Exception):
    """Raised after the report when a stage failed, so the flow run ends Failed."""


class ContainmentRolledBack(Exception):
    """A containment step failed, so the stage's completed steps were undone."""


ROLLBACK_AUTHORITY = "policy:rollback"
"""Who authorised a compensating action: the failed stage's own transaction."""


@task(name="record-incident", task_run_name="record {incident.id}", cache_policy=NO_CACHE)
async def record_incident(incident: Incident, store: Store, flow_run_id: str | None) -> None:
    """Save the incident with its flow run id (detect stage: the alerts are in hand)."""
    await store.save_incident(incident, flow_run_id=flow_run_id)


class Lifecycle:
    """One incident's way through the five stages; the flow function drives it."""

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
        playbooks: Sequence[LoadedPlaybook] = (),
    ) -> None:
        self.incident = incident
        self.settings = settings
        self.store = store
        self.integrations = integrations
        self.gate = gate
        self.policy = policy
        self.flow_run_id = flow_run_id
        self.stages: list[StageRecord] = []
        self.actions: list[ActionResult] = []
        self.decisions: list[dict[str, Any]] = []
        self.investigation = Investigation()
        self.route = route(incident, playbooks) if playbooks else None
        self.plan: PlaybookPlan | None = None
        # Containment steps run in one transaction; this lifecycle's copy of the step task
        # carries the rollback hook that undoes a step when the stage fails half-way.
        self._contain_step = contain_action.with_options()
        # Prefect awaits a coroutine hook inside an async transaction; its annotation
        # names only the synchronous kind.
        self._contain_step.on_rollback_hooks = [cast(Any, self._compensate)]

    def _tags(self, stage: Stage, vendor: str) -> list[str]:
        return [f"stage:{stage.value}", f"vendor:{vendor}", f"tenant:{self.incident.tenant}"]

    @asynccontextmanager
    async def stage(self, stage: Stage) -> AsyncIterator[list[str]]:
        """Record the stage's transitions; the yielded list collects notes."""
        started = await self.store.record_stage(self.incident.id, stage, "started")
        notes: list[str] = []
        try:
            yield notes
        except Pause:
            # Suspended for an approval: this process ends; the resumed run starts the
            # stage again, and the clocks see the gap.
            await self.store.record_stage(self.incident.id, stage, "suspended")
            raise
        except Exception as exc:
            finished = await self.store.record_stage(self.incident.id, stage, "failed")
            self.stages.append(
                StageRecord(
                    stage=stage,
                    state="failed",
                    started_at=started,
                    finished_at=finished,
                    note=f"{type(exc).__name__}: {exc}",
                )
            )
            raise
        failed = any(n.startswith("failed") for n in notes)
        event = "failed" if failed else "completed"
        finished = await self.store.record_stage(self.incident.id, stage, event)
        self.stages.append(
            StageRecord(
                stage=stage,
                state=event,
                started_at=started,
                finished_at=finished,
                note="; ".join(notes),
            )
        )

    async def run(self) -> IncidentOutcome:
        """Run all five stages; the report is written even if an earlier stage failed."""
        logger = get_run_logger()
        failure: BaseException | None = None
        try:
            await self.detect()
            await self.investigate()
            await self.contain()
            await self.remediate()
        except Exception as exc:
            logger.error("Incident %s: %s: %s", self.incident.id, type(exc).__name__, exc)
            failure = exc
        outcome = await self.report()
        if failure is not None or any(s.state == "failed" for s in self.stages):
            raise IncidentIncomplete(
                f"{self.incident.id}: report written to {outcome.report_paths.get('markdown')}, "
                "but a stage failed; see the report and the task runs"
            ) from failure
        return outcome

    async def detect(self) -> None:
        """Record the incident the intake correlated from its alerts."""
        async with self.stage(Stage.DETECT) as notes:
            vendors = sorted({a.vendor.lower() for a in self.incident.alerts})
            with tags(*self._tags(Stage.DETECT, ",".join(vendors))):
                await record_incident(self.incident, self.store, self.flow_run_id)
            notes.append(f"{len(self.incident.alerts)} alert(s) from {', '.join(vendors)}")
            chosen = self.route.chosen if self.route else None
            await self.store.set_incident_playbook(self.incident.id, chosen.id if chosen else None)
            notes.append(f"playbook {chosen.id}" if chosen else "built-in response")

    async def investigate(self) -> None:
        """Look up every host and user the alerts name, then score the incident."""
        async with self.stage(Stage.INVESTIGATE) as notes:
            notes.extend(await self._look_up_and_plan())

    async def _look_up_and_plan(self) -> list[str]:
        """Ask the vendors about the alerts' hosts and users, assess, plan the playbook."""
        notes: list[str] = []
        edr, idp = self.integrations.edr, self.integrations.identity
        with tags(*self._tags(Stage.INVESTIGATE, edr.vendor)):
            hosts = await asyncio.gather(
                *(find_host(edr, name) for name in self.incident.hostnames)
            )
        with tags(*self._tags(Stage.INVESTIGATE, idp.vendor)):
            users = await asyncio.gather(*(find_user(idp, login) for login in self.incident.users))
        self.investigation = assess(
            self.incident,
            dict(zip(self.incident.hostnames, hosts, strict=True)),
            dict(zip(self.incident.users, users, strict=True)),
        )
        notes.append(f"verdict {self.investigation.verdict}, risk {self.investigation.risk_score}")
        if self.route is not None and self.route.chosen is not None:
            self.plan = await self._plan_playbook(self.route.chosen, hosts, users)
            notes.append(
                f"playbook {self.plan.playbook} v{self.plan.version} planned "
                f"{len(self.plan.actions)} action(s)"
            )
        return notes

    async def _learn_joined_alerts(self) -> list[str]:
        """Take in alerts the intake joined to this incident since the run began.

        Re-read before each stage that acts: the new alerts' hosts and users are looked
        up and the plan is made again, so the stage acts on the incident as it is now.
        The playbook stays the one chosen at detect.
        """
        joined = await joined_alerts(self.store, self.incident)
        if not joined:
            return []
        self.incident = self.incident.model_copy(
            update={"alerts": [*self.incident.alerts, *joined]}
        )
        await self.store.save_incident(self.incident)
        notes = [f"{len(joined)} alert(s) joined the incident; planned again"]
        return notes + await self._look_up_and_plan()

    async def _plan_playbook(
        self, playbook: LoadedPlaybook, hosts: Sequence[Any], users: Sequence[Any]
    ) -> PlaybookPlan:
        """Plan the playbook, answering its lookups from what investigation already found."""
        found: dict[tuple[str, str], Any] = {}
        found.update(
            (("edr.find_host", n), h) for n, h in zip(self.incident.hostnames, hosts, strict=True)
        )
        found.update(
            (("identity.find_user", n), u) for n, u in zip(self.incident.users, users, strict=True)
        )
        adapters = {c: self.integrations.adapter(c) for c in self.integrations.vendors}
        fallback = adapter_lookup(adapters)

        async def lookup(action: str, args: Mapping[str, Any]) -> Any:
            # The vendors were already asked about these hosts and users; anything else
            # goes to the adapter (read-only calls only).
            key = (action, str(next(iter(args.values()), "")))
            return found[key] if key in found else await fallback(action, args)

        return await plan_playbook(playbook, self.incident, lookup)

    async def contain(self) -> None:
        """Plan containment, get authority for it, execute what was authorised."""
        async with self.stage(Stage.CONTAIN) as notes:
            notes.extend(await self._learn_joined_alerts())
            planned = self._planned(Stage.CONTAIN)
            notes.extend(await self.authorise_and_execute(Stage.CONTAIN, planned))
            if any(
                a.status in (ActionStatus.EXECUTED, ActionStatus.ALREADY_DONE) for a in self.actions
            ):
                await self.store.set_incident_status(self.incident.id, "contained")

    async def remediate(self) -> None:
        """Remove what the attacker left: block the file hash, expire the password."""
        async with self.stage(Stage.REMEDIATE) as notes:
            notes.extend(await self._learn_joined_alerts())
            planned = self._planned(Stage.REMEDIATE)
            notes.extend(await self.authorise_and_execute(Stage.REMEDIATE, planned))

    def _planned(self, stage: Stage) -> list[PlannedAction]:
        """The stage's plans: the playbook's, or the built-in response's."""
        if self.plan is not None:
            return self.plan.planned(stage)
        builtin = containment_plans if stage == Stage.CONTAIN else remediation_plans
        return [
            PlannedAction(step="built-in", plan=p)
            for p in builtin(self.incident, self.investigation)
        ]

    async def report(self) -> IncidentOutcome:
        """Write the Markdown and HTML reports and publish the Prefect artifact."""
        outcome = IncidentOutcome(
            incident=self.incident,
            flow_run_id=self.flow_run_id,
            investigation=self.investigation,
            stages=list(self.stages),
            actions=list(self.actions),
            decisions=list(self.decisions),
            playbook=self.plan.playbook if self.plan else None,
            playbook_notes=[
                f"{n.stage.value} {n.step}: {n.status} — {n.text}"
                for n in (self.plan.notes if self.plan else [])
                if n.status != "looked_up"
            ],
        )
        async with self.stage(Stage.REPORT):
            # From the stored records, as `stanch metrics` computes them: one definition.
            outcome.clocks = clocks_of(
                self.incident,
                await self.store.stage_events(self.incident.id),
                await self.store.approvals(incident_id=self.incident.id),
            ).clocks
            outcome.stages = list(self.stages)
            ledger = Ledger(self.store)
            outcome.in_effect = [
                f"{e.entry.capability}.{e.entry.verb} {e.entry.target_label}"
                for e in await ledger.in_effect(self.incident.id)
            ]
            verified = await ledger.verify()
            outcome.ledger = {
                "verified": verified.ok,
                "message": verified.message,
                "entries": await ledger.export(self.incident.id),
            }
            with tags(*self._tags(Stage.REPORT, "stanch")):
                outcome.report_paths = await publish_report(outcome, self.settings.reports_dir)
            await self.store.set_incident_status(self.incident.id, "resolved")
        outcome.stages = list(self.stages)
        chat = slack_chat(self.settings)
        if chat is not None:
            # Best effort: a Slack failure is logged and never fails the incident.
            await post_incident_summary(outcome, self.store, chat)
        return outcome

    async def authorise_and_execute(
        self, stage: Stage, planned: Sequence[PlannedAction]
    ) -> list[str]:
        """Ask policy about each plan, get approval where needed, run what is authorised.

        A playbook step that requires approval tightens policy's verdict, never loosens it.
        Forbidden and denied plans are recorded (store and ledger) as refused; authorised
        ones run concurrently as tasks. Returns notes for the stage record.
        """
        notes: list[str] = []
        planned = await self._replay_done(planned, notes)
        plans = [p.plan for p in planned]
        # Budgets count what already ran for the tenant (a day covers any budget window),
        # but not these very plans: a row a killed run left behind is not spent budget.
        keys = {p.idempotency_key for p in plans}
        recent = [
            row
            for row in await self.store.recent_actions(
                self.incident.tenant, utcnow() - timedelta(days=1)
            )
            if row.idempotency_key not in keys
        ]

        def counter(tenant: str, action: str, window: timedelta) -> int:
            return count_recent_actions(recent, tenant=tenant, action=action, window=window)

        decided = decide(self.policy, planned, self.incident, recent_actions=counter)
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
                timeout_seconds=self.settings.approval_timeout_seconds,
                incident_title=self.incident.title,
                **_approvers_of([verdicts[p.sha256] for p in needs_approval]),
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

    async def _compensate(self, transaction: AsyncTransaction) -> None:
        """Rollback hook of one containment step: undo what it changed. Never raises.

        Only a step that changed something (``executed``) is undone; the inverse runs
        through the same executor (idempotent, recorded in the store and the ledger) on
        the authority of the failed stage's transaction.
        """
        result = transaction.get("result", None)
        if not isinstance(result, ActionResult) or result.status != ActionStatus.EXECUTED:
            return
        logger = get_run_logger()
        plan = result.plan
        try:
            for effect in await Ledger(self.store).in_effect(self.incident.id):
                entry = effect.entry
                if (entry.capability, entry.verb, entry.target) != (
                    plan.capability.value,
                    plan.verb,
                    plan.target,
                ):
                    continue
                inverse = effect.inverse_plan()
                undone = await execute_action.fn(
                    inverse,
                    inverse.sha256,
                    self.integrations.adapter(inverse.capability),
                    self.store,
                    verdict=Verdict.UNATTENDED,
                    approved_by=[ROLLBACK_AUTHORITY],
                )
                self.actions.append(undone)
                logger.warning("Rolled back %s: %s", plan.action, undone.status)
        except Exception as exc:  # a hook must not raise (notes/prefect.md §4a)
            logger.error(
                "Could not roll back %s %s (%s: %s); it stays in effect: `stanch undo %s` lists it",
                plan.action,
                plan.target_label,
                type(exc).__name__,
                exc,
                self.incident.id,
            )

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
            with tags(*self._tags(stage, adapter.vendor)):
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


def _approvers_of(decisions: list[RoeDecision]) -> dict[str, Any]:
    """One request covers several plans: the strictest count, the approvers all allow."""
    ids: list[str] = []
    groups: list[str] = []
    for d in decisions:
        ids.extend(u for u in d.approvers.slack_users if u not in ids)
        if d.approvers.slack_group and d.approvers.slack_group not in groups:
            groups.append(d.approvers.slack_group)
    return {
        "required_approvals": max([1, *(d.approvals_required for d in decisions)]),
        "approver_ids": tuple(ids),
        "approver_group": groups[0] if groups else None,
        "allow_prefect_ui": all("prefect-ui" in d.approvers.channels for d in decisions),
    }


def default_gate(settings: StanchSettings) -> ApprovalGate:
    """The approval channel the settings choose: Slack, or the CLI-resumed pause."""
    if settings.approval_channel == "slack":
        from flows.slack_gate import SlackPauseGate

        chat = slack_chat(settings)
        if chat is None:
            raise ValueError(
                "approval_channel=slack needs STANCH_SLACK_BOT_TOKEN and STANCH_SLACK_CHANNEL"
            )
        return SlackPauseGate(
            settings.approval_key(),
            chat,
            timeout_seconds=settings.approval_timeout_seconds,
            poll_seconds=settings.approval_poll_seconds,
            approver_ids=tuple(settings.slack_approver_ids),
            approver_group=settings.slack_approver_group,
            suspend_after_seconds=settings.approval_suspend_after_seconds,
        )
    return PrefectPauseGate(
        settings.approval_key(),
        timeout_seconds=settings.approval_timeout_seconds,
        poll_seconds=settings.approval_poll_seconds,
        suspend_after_seconds=settings.approval_suspend_after_seconds,
    )


# No ``from __future__ import annotations`` in this module: a worker imports it from its
# file path, and Prefect validates the flow's parameters against the real ``Incident``
# class, which a string annotation would not resolve to (the deployed run then fails).
@flow(name="handle-incident", flow_run_name="{incident.id} {incident.title}", log_prints=False)
async def handle_incident(incident: Incident) -> IncidentOutcome:
    """Run one incident through detect, investigate, contain, remediate and report.

    Args:
        incident: the correlated alerts, already normalised to OCSF.

    Returns:
        What happened: stages, actions with their plan hashes and approvers, report paths,
        clocks.
    """
    settings = load_settings()
    run_id = flow_run.get_id()
    async with (
        open_store(settings.store_url) as store,
        wiring.connect(settings, tenant=incident.tenant) as integrations,
    ):
        lifecycle = Lifecycle(
            incident,
            settings=settings,
            store=store,
            integrations=integrations,
            gate=default_gate(settings),
            policy=policy_for_tenant(policy_directory(settings.policies_dir), incident.tenant),
            flow_run_id=str(run_id) if run_id else None,
            playbooks=load_playbooks(playbook_directory(settings.playbooks_dir)),
        )
        return await lifecycle.run()
