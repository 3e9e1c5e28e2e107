"""The ``handle-incident`` flow: detect → investigate → contain → remediate → report.

One flow run per incident, named after it and tagged ``tenant:<id>``,
``severity:<level>`` and ``playbook:<id>`` (the run list filters on these). Each stage's
vendor calls are coarse async tasks named after their stage and vendor
(``[contain] edr.contain_host WS-0042 · crowdstrike``), untagged: Prefect takes a
concurrency lease per tag of every task run. Containment and remediation go through
policy and, where policy says so, an analyst's approval; every action is recorded in the
store under its idempotency key.
"""

import asyncio
import fnmatch
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext, TagsContext
from prefect.events import emit_event
from prefect.exceptions import Pause
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from flows import wiring
from flows.approval import AUTOMATION_REQUESTER, ApprovalGate, default_gate
from flows.detect import incident_from_event, joined_alerts, merged_into
from flows.errors import AlertRejected
from flows.intel import indicators_of, look_up, with_intel
from flows.models import (
    ActionResult,
    ActionStatus,
    CaseStatus,
    Disposition,
    Incident,
    IncidentOutcome,
    Investigation,
    Stage,
    StageRecord,
    utcnow,
)
from flows.playbook import (
    DEFAULT_SINCE_DAYS,
    LoadedPlaybook,
    PlannedAction,
    PlaybookError,
    PlaybookPlan,
    PythonPlaybook,
    Route,
    adapter_lookup,
    hunt_call,
    load_library,
    plan_playbook,
    route,
)
from flows.policy import PolicyError, RulesOfEngagement, policy_or_fail_safe
from flows.record import (
    AUTO_CLOSE_ACTOR,
    CaseBook,
    IntelRecords,
    Ledger,
    Store,
    events,
    in_effect_line,
    incident_clocks,
    open_store,
    post_incident_summary,
    publish_artifacts,
    publish_report,
)
from flows.respond import (
    HUNT_SINCE_DAYS,
    ROLLBACK_AUTHORITY,
    STILL_IN_EFFECT,
    Responder,
    assess,
    containment_plans,
    hunt_incident,
    remediation_plans,
    summarise_hunt,
)
from flows.settings import StanchSettings, load_settings, playbook_directory, policy_directory
from flows.tasks import find_host, find_user, in_stage, playbook_lookup, playbook_stage
from flows.wiring import slack_chat
from integrations.hunting import HuntResult


class IncidentIncomplete(Exception):
    """Raised after the report when a stage failed, so the flow run ends Failed."""


@task(name="record-incident", task_run_name="[detect] record {incident.id}", cache_policy=NO_CACHE)
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
        playbook: str | None = None,
        warnings: Sequence[str] = (),
        requester: str = AUTOMATION_REQUESTER,
    ) -> None:
        self.settings = settings
        self.warnings = list(warnings)
        self.store = store
        self.cases = CaseBook(store)
        self.policy = policy
        self.integrations = integrations
        self.flow_run_id = flow_run_id
        self.responder = Responder(
            incident,
            settings=settings,
            store=store,
            integrations=integrations,
            gate=gate,
            policy=policy,
            flow_run_id=flow_run_id,
            requester=requester,
        )
        self.stages: list[StageRecord] = []
        self.investigation = Investigation()
        self.hunted: list[HuntResult] = []
        self.route = route(incident, playbooks) if playbooks else None
        if playbook is not None:
            # Chosen by the event that started the run, not by routing.
            chosen = next((p for p in playbooks if p.id == playbook), None)
            if chosen is None:
                raise ValueError(f"no playbook {playbook!r} in the library")
            self.route = Route(chosen, ())
        self.plan: PlaybookPlan | None = None
        self.merged_into: str | None = None

    @property
    def incident(self) -> Incident:
        """The incident as it is now (alerts that joined since the run began included)."""
        return self.responder.incident

    @incident.setter
    def incident(self, incident: Incident) -> None:
        self.responder.incident = incident

    @property
    def actions(self) -> list[ActionResult]:
        """Every action result so far."""
        return self.responder.actions

    def run_tags(self) -> list[str]:
        """The flow run's own tags: tenant, severity and playbook (``built-in`` if none)."""
        chosen = self.route.chosen if self.route else None
        return [
            f"tenant:{self.incident.tenant}",
            f"severity:{self.incident.severity.name.lower()}",
            f"playbook:{chosen.id if chosen else 'built-in'}",
        ]

    async def tag_run(self) -> None:
        """Add :meth:`run_tags` to the flow run, keeping the tags it was created with.

        One update of the flow run, which takes no concurrency lease; task runs do not
        inherit flow-run tags set this way. Best effort: the tags are for the run list, so
        a Prefect API failure is logged and the incident goes on.
        """
        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        run = context.flow_run
        wanted = sorted({*run.tags, *self.run_tags()})
        if wanted == sorted(run.tags):
            return
        try:
            async with get_client() as client:
                await client.update_flow_run(run.id, tags=wanted)
        except Exception as exc:  # the run list loses its filter, containment does not stop
            get_run_logger().warning("Could not tag the flow run %s: %s", wanted, exc)
            return
        run.tags = wanted

    @asynccontextmanager
    async def stage(self, stage: Stage) -> AsyncIterator[list[str]]:
        """Record the stage's transitions; the yielded list collects notes.

        Task runs started inside are named after the stage (``[contain] …``).
        """
        started = await self.store.record_stage(self.incident.id, stage, "started")
        notes: list[str] = []
        try:
            with in_stage(stage):
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

    async def skip(self, stage: Stage, why: str) -> None:
        """Record a stage that did not run, and why."""
        at = await self.store.record_stage(self.incident.id, stage, "skipped")
        self.stages.append(
            StageRecord(stage=stage, state="skipped", started_at=at, finished_at=at, note=why)
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
            await record_incident(self.incident, self.store, self.flow_run_id)
            await self.tag_run()
            notes.append(f"{len(self.incident.alerts)} alert(s) from {', '.join(vendors)}")
            chosen = self.route.chosen if self.route else None
            await self.store.set_incident_playbook(self.incident.id, chosen.id if chosen else None)
            notes.append(f"playbook {chosen.id}" if chosen else "built-in response")
            self.responder.playbook = chosen.id if chosen else None
            events.incident_opened(self.incident, self.responder.playbook)

    async def investigate(self) -> None:
        """Look up every host and user the alerts name, then score the incident."""
        async with self.stage(Stage.INVESTIGATE) as notes:
            await self.cases.advance(
                self.incident.id, CaseStatus.INVESTIGATING, reason="investigation started"
            )
            notes.extend(await self._look_up_and_plan())

    async def _look_up_and_plan(self) -> list[str]:
        """Ask the vendors about the alerts' hosts and users, assess, plan the playbook."""
        notes: list[str] = []
        edr, idp = self.integrations.edr, self.integrations.identity
        hosts = await asyncio.gather(*(find_host(edr, name) for name in self.incident.hostnames))
        users = await asyncio.gather(*(find_user(idp, login) for login in self.incident.users))
        self.hunted = await hunt_incident(edr, self.incident, since_days=HUNT_SINCE_DAYS)
        hunts = [summarise_hunt(r, self.incident.hostnames) for r in self.hunted]
        await self.store.save_hunts(self.incident.id, hunts)
        notes.extend(f"hunt {h.line()}" for h in hunts)
        self.investigation = assess(
            self.incident,
            dict(zip(self.incident.hostnames, hosts, strict=True)),
            dict(zip(self.incident.users, users, strict=True)),
            hunts,
        )
        self.investigation, intel_note = await self._threat_intel(self.investigation)
        notes.extend(intel_note)
        self.responder.investigation = self.investigation
        notes.append(f"verdict {self.investigation.verdict}, risk {self.investigation.risk_score}")
        if self.route is not None and self.route.chosen is not None:
            self.plan = await self._plan_playbook(self.route.chosen, hosts, users)
            notes.append(
                f"playbook {self.plan.playbook} v{self.plan.version} planned "
                f"{len(self.plan.actions)} action(s)"
            )
        return notes

    async def _threat_intel(self, found: Investigation) -> tuple[Investigation, list[str]]:
        """Threat intel: look every indicator up (cache first), keep the findings, score them.

        Never fails the stage: a lookup that could not be made is an ``unknown`` verdict
        with a note saying why.
        """
        services = self.integrations.intel
        indicators = indicators_of(self.incident)
        if not services or not indicators:
            return found, []
        records = IntelRecords(self.store.engine)
        findings = await look_up(
            services,
            indicators,
            records,
            tenant=self.incident.tenant,
            ttl_seconds=self.settings.intel_cache_seconds,
        )
        await records.record(self.incident.id, [(f.report, f.cached) for f in findings])
        found = with_intel(found, [f.report for f in findings])
        malicious = sorted(
            {f.report.indicator for f in findings if f.report.verdict == "malicious"}
        )
        cached = sum(f.cached for f in findings)
        note = (
            f"threat intel: {len(indicators)} indicator(s), {len(malicious)} malicious, "
            f"{cached} of {len(findings)} answer(s) from the cache"
        )
        return found, [note]

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
        events.incident_joined(self.incident, self.responder.playbook, len(joined))
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
        # The investigate stage hunted the incident's indicators already.
        since = HUNT_SINCE_DAYS
        found.update((("edr.hunt", f"{r.indicator}:{since}"), r) for r in self.hunted)
        adapters = {c: self.integrations.adapter(c) for c in self.integrations.vendors}
        fallback = adapter_lookup(adapters)

        async def lookup(action: str, args: Mapping[str, Any]) -> Any:
            # The vendors were already asked about these hosts and users; anything else
            # goes to the adapter (read-only calls only).
            key = (action, str(next(iter(args.values()), "")))
            if action == "edr.hunt":
                key = (action, _hunt_key(args))
            if key in found:
                return found[key]
            if isinstance(playbook, PythonPlaybook):
                # A Python playbook's lookups are its steps: visible as task runs.
                return await playbook_lookup(fallback, action, args)
            return await fallback(action, args)

        return await plan_playbook(playbook, self.incident, lookup, run_stage=playbook_stage)

    async def _merged_away(self, stage: Stage) -> bool:
        """Whether correlation merged this incident into another: then ``stage`` is skipped.

        Checked before each stage that acts, as joined alerts are: the survivor's run
        takes in this incident's alerts and acts on them; this run acts no further.
        """
        if self.merged_into is None:
            self.merged_into = await merged_into(self.store, self.incident)
        if self.merged_into is None:
            return False
        await self.skip(
            stage, f"not run: merged into {self.merged_into}, whose run acts on its alerts"
        )
        return True

    async def contain(self) -> None:
        """Plan containment, get authority for it, execute what was authorised."""
        if await self._merged_away(Stage.CONTAIN):
            return
        async with self.stage(Stage.CONTAIN) as notes:
            notes.extend(await self._learn_joined_alerts())
            planned = self._planned(Stage.CONTAIN)
            notes.extend(
                await self.responder.authorise_and_execute(
                    Stage.CONTAIN, planned, asset_names=self.investigation.asset_names()
                )
            )
            await self._advance_if_done(Stage.CONTAIN, CaseStatus.CONTAINED)

    async def remediate(self) -> None:
        """Remove what the attacker left: block the file hash, expire the password.

        Not run at all when an analyst denied containment as a false positive.
        """
        if self.responder.stopped is not None:
            await self.skip(
                Stage.REMEDIATE, "not run: the response was stopped as a false positive"
            )
            return
        if await self._merged_away(Stage.REMEDIATE):
            return
        async with self.stage(Stage.REMEDIATE) as notes:
            notes.extend(await self._learn_joined_alerts())
            planned = self._planned(Stage.REMEDIATE)
            notes.extend(
                await self.responder.authorise_and_execute(
                    Stage.REMEDIATE, planned, asset_names=self.investigation.asset_names()
                )
            )
            await self._advance_if_done(Stage.REMEDIATE, CaseStatus.REMEDIATED)

    async def _advance_if_done(self, stage: Stage, status: CaseStatus) -> None:
        """Move the case to ``status`` when an action of ``stage`` took effect."""
        done = [
            a
            for a in self.actions
            if a.plan.stage == stage
            and a.status in (ActionStatus.EXECUTED, ActionStatus.ALREADY_DONE)
        ]
        if done:
            await self.cases.advance(
                self.incident.id, status, reason=f"{len(done)} {stage.value} action(s) took effect"
            )

    async def _close_by_policy(self) -> None:
        """Close the case if the tenant's policy lets a benign verdict close itself."""
        if self.investigation.verdict != "benign":
            return
        if (await self.cases.get(self.incident.id)).status != CaseStatus.AWAITING_CLOSURE:
            return  # a re-run of a case a person already closed or reopened
        handled_by = self.plan.playbook if self.plan else "built-in"
        for rule in self.policy.rules.auto_close:
            if rule.when != "benign-verdict" or rule.playbook not in (None, handled_by):
                continue
            await self.cases.close(
                self.incident.id,
                disposition=Disposition(rule.disposition),
                summary=(
                    f"Investigation found it benign (risk {self.investigation.risk_score}); "
                    f"{handled_by} handled it; closed by the tenant's policy."
                ),
                actor=AUTO_CLOSE_ACTOR,
            )
            return

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
            decisions=list(self.responder.decisions),
            playbook=self.plan.playbook if self.plan else None,
            playbook_notes=[
                f"{n.stage.value} {n.step}: {n.status} — {n.text}"
                for n in (self.plan.notes if self.plan else [])
                if n.status != "looked_up"
            ],
            warnings=list(self.warnings),
        )
        async with self.stage(Stage.REPORT):
            # The flow's part ends here: a person (or the tenant's policy) closes the case.
            await self.cases.advance(
                self.incident.id, CaseStatus.AWAITING_CLOSURE, reason="report written"
            )
            await self._close_by_policy()
            outcome.case_status = (await self.cases.get(self.incident.id)).status
            # From the stored records, as `stanch metrics` computes them: one definition.
            (clocks,) = await incident_clocks(self.store, incident_ids=[self.incident.id])
            outcome.clocks = clocks.clocks
            outcome.clock_notes = clocks.missing
            outcome.stages = list(self.stages)
            ledger = Ledger(self.store)
            # What a rollback could not undo is named as such, so a person acts on it.
            unrolled = {
                (a.plan.capability.value, a.plan.target)
                for a in self.actions
                if a.approved_by == [ROLLBACK_AUTHORITY] and a.status == ActionStatus.FAILED
            }
            outcome.in_effect = [
                in_effect_line(e)
                + (
                    f" — {STILL_IN_EFFECT}"
                    if (e.entry.capability, e.entry.target) in unrolled
                    else ""
                )
                for e in await ledger.in_effect(self.incident.id)
            ]
            verified = await ledger.verify_since_checkpoint()
            outcome.ledger = {
                "verified": verified.ok,
                "message": verified.message,
                # An anchor for `stanch ledger verify --anchor`, kept with the report.
                "head": str(verified.head),
                "entries": await ledger.export(self.incident.id),
            }
            outcome.report_paths = await publish_report(outcome, self.settings.reports)
            # On the flow run itself (not the task), so its Artifacts tab lists them.
            artifact = await publish_artifacts(outcome)
            if artifact:
                outcome.report_paths["prefect"] = artifact
        outcome.stages = list(self.stages)
        chat = slack_chat(self.settings, self.incident.tenant)
        if chat is not None:
            # Best effort: a Slack failure is logged and never fails the incident.
            await post_incident_summary(outcome, self.store, chat)
        return outcome


# No ``from __future__ import annotations`` in this module: a worker imports it from its
# file path, and Prefect validates the flow's parameters against the real ``Incident``
# class, which a string annotation would not resolve to (the deployed run then fails).
@flow(name="handle-incident", flow_run_name="{incident.id} {incident.title}", log_prints=False)
async def handle_incident(
    incident: Incident, requester: str = AUTOMATION_REQUESTER, playbook: str | None = None
) -> IncidentOutcome:
    """Run one incident through detect, investigate, contain, remediate and report.

    Args:
        incident: the correlated alerts, already normalised to OCSF.
        requester: who started the run: ``cli:<user>@<host>`` for ``stanch run`` or
            ``rerun``, ``slack:<user id>`` for a Slack user, ``automation:intake`` (the
            default) for intake and pollers. They may not approve its requests.
        playbook: run this playbook instead of routing (an event chose it).

    Returns:
        What happened: stages, actions with their plan hashes and approvers, report paths,
        clocks.
    """
    settings = load_settings()
    run_id = flow_run.get_id()
    library = load_library(playbook_directory(settings.playbooks_dir))
    policy, policy_error = policy_or_fail_safe(
        policy_directory(settings.policies_dir), incident.tenant
    )
    warnings = [*map(skipped_playbook, library.broken)]
    if policy_error is not None:
        warnings.append(fail_safe_warning(incident.tenant, policy_error))
    async with (
        open_store(settings.store_url) as store,
        wiring.connect(settings, tenant=incident.tenant) as integrations,
    ):
        # Tags the caller set around this call (`with tags(...)`: a rerun's, the demo's)
        # are on the flow run already; its task runs must not inherit them, or each takes
        # a concurrency lease.
        with TagsContext(current_tags=set()):
            lifecycle = Lifecycle(
                incident,
                settings=settings,
                store=store,
                integrations=integrations,
                gate=default_gate(settings, incident.tenant),
                policy=policy,
                flow_run_id=str(run_id) if run_id else None,
                playbooks=library.playbooks,
                warnings=warnings,
                playbook=playbook,
                requester=requester,
            )
            return await lifecycle.run()


@flow(name="playbook-on-event", flow_run_name="{playbook} on an event", log_prints=False)
async def playbook_on_event(playbook: str, event: dict[str, Any]) -> IncidentOutcome:
    """Run ``playbook`` on a Prefect event that its trigger names, as a new incident.

    Args:
        playbook: the playbook id; its trigger's ``events`` must match the event's name.
        event: the event, as an automation renders ``{{ event }}``.

    Raises:
        ValueError: no such playbook, or its trigger does not name this event.
        AlertRejected: the event is not one stanch can act on (it is kept as a dead
            letter with the field and the reason).
    """
    settings = load_settings()
    library = {p.id: p for p in load_library(playbook_directory(settings.playbooks_dir)).playbooks}
    chosen = library.get(playbook)
    if chosen is None:
        raise ValueError(f"no playbook {playbook!r} in the library")
    name = str(event.get("event", "")) if isinstance(event, Mapping) else ""
    if not any(fnmatch.fnmatchcase(name, p) for p in chosen.spec.trigger.events):
        raise ValueError(f"playbook {playbook} does not answer the event {name[:100]!r}")
    async with open_store(settings.store_url) as store:
        try:
            incident = incident_from_event(await store.allocate_incident_id(utcnow()), event)
        except AlertRejected as exc:
            await store.dead_letter(
                source=f"prefect-event/{playbook}",
                field=exc.field,
                reason=exc.reason,
                payload=json.dumps(event, default=str)[:100_000],
            )
            raise
        await store.save_incident(incident)
    return await handle_incident(incident, requester="automation:prefect-event", playbook=playbook)


def _hunt_key(args: Mapping[str, Any]) -> str:
    """``sha256:<hash>:<days>`` for a playbook's hunt arguments (``""`` if malformed)."""
    try:
        indicator, _ = hunt_call(args)
    except ValueError:
        return ""
    return f"{indicator}:{args.get('since_days', DEFAULT_SINCE_DAYS)}"


def skipped_playbook(error: PlaybookError) -> str:
    """Log and announce a playbook that does not load; the incident routes among the rest.

    Emits the Prefect event ``stanch.playbook.invalid`` (resource ``stanch.playbook.<file>``)
    so an automation or the Events page shows it, and returns the report's line.
    """
    first = error.issues[0]
    get_run_logger().error("Playbook %s skipped: it does not load: %s", error.file, first)
    emit_event(
        event="stanch.playbook.invalid",
        resource={"prefect.resource.id": f"stanch.playbook.{Path(error.file).stem}"},
        payload={"file": error.file, "issues": [str(i) for i in error.issues[:20]]},
    )
    more = f" (and {len(error.issues) - 1} more)" if len(error.issues) > 1 else ""
    return f"playbook {error.file} was skipped, it does not load: {first}{more}"


def fail_safe_warning(tenant: str, error: PolicyError) -> str:
    """Log and announce a tenant policy that does not load: every action now needs a person."""
    first = error.issues[0]
    get_run_logger().error(
        "Policy of tenant %s does not load (%s): every action needs approval", tenant, first
    )
    emit_event(
        event="stanch.policy.invalid",
        resource={"prefect.resource.id": f"stanch.policy.{tenant}"},
        payload={"tenant": tenant, "issues": [str(i) for i in error.issues[:20]]},
    )
    return f"the policy of tenant {tenant} does not load ({first}): every action asked for approval"
