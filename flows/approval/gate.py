"""Waiting for a decision: a typed Prefect pause (or suspend), resumed by a signed decision.

The flow stores an approval request, then pauses for an :class:`ApprovalDecision`. The
channel that collects the human's answer is a seam: :func:`submit_decision` serves the
CLI and the demo's simulated analyst; the Slack service calls it too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, cast
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import apause_flow_run, aresume_flow_run, asuspend_flow_run
from prefect.logging import get_run_logger

from flows.approval.request import (
    CLI_CHANNEL,
    EXPIRY_CHANNEL,
    ON_TIMEOUT_APPROVER,
    ApprovalDecision,
    ApprovalOutcome,
    ApprovalRequest,
    _next_id,
    cli_refusal,
    pending_row,
    self_approval,
    sign_decision,
    verify_decision,
)
from flows.errors import ApprovalError
from flows.models import utcnow
from flows.record import ApprovalRow, Ledger, Store
from flows.settings import StanchSettings
from flows.wiring import slack_chat


class ApprovalGate(Protocol):
    """Asks humans about plans and returns their verified answer."""

    async def request(self, request: ApprovalRequest, store: Store) -> ApprovalOutcome: ...


SELF_EXPIRY_GRACE_SECONDS = 120
"""How long past the deadline a paused run's own pause lasts: its signed expiry at the
deadline must land first."""

SUSPEND_GRACE_SECONDS = 3600
"""How long past its deadline a suspended run stays resumable, so the sweeper's signed
expiry (sent at the deadline) always lands before Prefect's own timeout (a run whose
pause timed out can no longer be resumed)."""


class PrefectPauseGate:
    """Wait for a signed :class:`ApprovalDecision` by pausing or suspending the flow run.

    A run started from a deployment whose wait may be long is *suspended*: its process
    exits, and once resumed a worker runs the flow again from the start; completed actions
    replay from the store and the same approval (same deterministic id and pause keys) hands
    back the decision. Any other run is *paused* in place, polling for the resume.

    A resume whose decision cannot be verified (forged, malformed, from a channel or a
    person the request does not allow, or no input at all) is kept as an attempt, in the
    store and the ledger, and the run waits again, under a new pause key, until the
    request's deadline: a forgery can neither approve nor deny. At the deadline the
    request expires and its ``on_timeout`` applies.

    Args:
        key: the approval HMAC key.
        timeout_seconds: unused; each request carries its policy's timeout.
        poll_seconds: how often the paused run checks for a resume.
        suspend_after_seconds: suspend (rather than pause) deployed runs whose timeout is
            at least this long; ``None`` never suspends.
        grace_seconds: how long past the deadline the pause itself waits.
    """

    def __init__(
        self,
        key: bytes,
        *,
        timeout_seconds: int | None = None,
        poll_seconds: float,
        suspend_after_seconds: int | None = None,
        grace_seconds: int = 0,
    ) -> None:
        self._key = key
        self._poll = poll_seconds
        self._suspend_after = suspend_after_seconds
        self._grace = grace_seconds

    def suspends(self, request: ApprovalRequest) -> bool:
        """Whether this run would be suspended: it has a deployment and may wait long."""
        context = FlowRunContext.get()
        return (
            self._suspend_after is not None
            and request.timeout_seconds >= self._suspend_after
            and context is not None
            and context.flow_run is not None
            and context.flow_run.deployment_id is not None
        )

    async def request(self, request: ApprovalRequest, store: Store) -> ApprovalOutcome:
        """Store the request, announce it, wait for the verified decision, record it."""
        outcome = await self._decide(request, store)
        await self._after(request, store, outcome)
        return outcome

    async def _announce(self, request: ApprovalRequest, store: Store) -> None:
        """Tell the approvers (after the request is stored, before pausing); a seam."""

    async def _after(
        self, request: ApprovalRequest, store: Store, outcome: ApprovalOutcome
    ) -> None:
        """Follow-up once the outcome is known; a seam."""

    async def _decide(self, request: ApprovalRequest, store: Store) -> ApprovalOutcome:
        logger = get_run_logger()
        existing = await store.get_approval(request.id)
        if existing is None:
            await store.create_approval(pending_row(request))
        elif existing.flow_run_id == request.flow_run_id:
            # This run again, re-executed after a suspend: the same pause keys hand back
            # the inputs it was resumed with (verified again below).
            request = request.model_copy(update={"deadline": _aware(existing.deadline)})
        elif existing.status == "pending":
            # The run that asked first is gone; the decision must resume this one.
            await store.rebind_approval(request.id, request.flow_run_id)
            request = request.model_copy(update={"deadline": _aware(existing.deadline)})
        elif existing.status == "approved":
            # Approved for an earlier run of this incident (a re-run after a crash): the
            # verified decision on exactly these plans stands; nothing is asked twice.
            logger.info("Approval %s: already approved by %s", request.id, existing.decided_by)
            return _recorded_outcome(request, existing)
        else:
            # Denied, expired or rejected for an earlier run: ask again, as a new request.
            return await self._decide(
                request.model_copy(update={"id": _next_id(request.id)}), store
            )
        logger.info(
            "Approval %s for %d action(s) on %s is waiting until %s; decide with "
            "`stanch approve %s` or `stanch deny %s --reason ...`",
            request.id,
            len(request.plans),
            request.incident_id,
            request.deadline.isoformat(timespec="seconds"),
            request.id,
            request.id,
        )
        if existing is None:
            await self._announce(request, store)
        attempt = 0
        while True:
            attempt += 1
            decision: ApprovalDecision | None = None
            try:
                waited = await self._wait(request, attempt)
            except FlowPauseTimeout:
                return await self._expired(request, store)
            except Exception as exc:  # resumed with no readable input (the run forced on)
                problem: str | None = f"resumed without a decision ({type(exc).__name__})"
                await asyncio.sleep(self._poll)  # never a tight loop if pausing itself fails
            else:
                decision, problem = waited, self._problem(waited, request)
            if problem is None and decision is not None:
                return await self._conclude(request, store, decision)
            await self._attempted(request, store, attempt, decision, problem or "")
            if utcnow() >= request.deadline + timedelta(seconds=self._grace):
                return await self._expired(request, store)

    async def _wait(self, request: ApprovalRequest, attempt: int) -> ApprovalDecision:
        """Pause (or suspend) for attempt ``attempt`` of a decision, until the deadline."""
        # Prefect input keys allow only lowercase letters, digits and dashes; a pause key
        # is used once (a second pause under it hands back the first input), so each
        # attempt after a refused one waits under its own.
        key = f"approval-{request.id.lower()}" + ("" if attempt == 1 else f"-a{attempt}")
        left = (request.deadline - utcnow()).total_seconds() + self._grace
        # The Resume form in the Prefect UI shows this text above the fields.
        form = ApprovalDecision.with_initial_data(description=pause_description(request))
        if self.suspends(request):
            # Raises Pause: this process ends here and the run resumes in a new one.
            return await asuspend_flow_run(
                wait_for_input=form,
                timeout=max(1, int(left)) + SUSPEND_GRACE_SECONDS,
                key=key,
            )
        if left <= 0:
            raise FlowPauseTimeout("the approval deadline has passed")
        # A Prefect pause that times out dooms the run (the server refuses every later
        # state but Failed), so the pause waits past the deadline and the run resumes
        # itself at the deadline with a signed expiry, as the Slack service would.
        expiry = asyncio.create_task(self._expire_at(request, left))
        try:
            return await apause_flow_run(
                wait_for_input=form,
                timeout=max(1, int(left)) + SELF_EXPIRY_GRACE_SECONDS,
                # Annotated int, but only ever slept on (anyio.sleep): a fraction of
                # a second is honoured, and the resume is noticed that much sooner.
                poll_interval=cast(int, self._poll),
                key=key,
            )
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await expiry

    async def _expire_at(self, request: ApprovalRequest, after: float) -> None:
        """Resume this run with a signed expiry once ``after`` seconds have passed."""
        await asyncio.sleep(after)
        context = FlowRunContext.get()
        run_id = request.flow_run_id or (
            str(context.flow_run.id) if context and context.flow_run else None
        )
        if run_id is None:
            return
        approve = request.on_timeout == "approve"
        fields: dict[str, Any] = {
            "approval_id": request.id,
            "approved": request.sha256s if approve else [],
            "denied": [] if approve else request.sha256s,
            "approver": "stanch",
            "channel": EXPIRY_CHANNEL,
            "reason": "no decision before the deadline",
            "decided_at": utcnow(),
            "signature": "0" * 64,
        }
        unsigned = ApprovalDecision.model_validate(fields)
        signature = sign_decision(self._key, unsigned.model_dump(mode="json"))
        decision = unsigned.model_copy(update={"signature": signature})
        try:
            await aresume_flow_run(UUID(run_id), run_input=decision.model_dump(mode="json"))
        except Exception as exc:  # decided meanwhile (not paused any more): nothing to do
            get_run_logger().info("Approval %s: expiry not needed: %s", request.id, exc)

    async def _attempted(
        self,
        request: ApprovalRequest,
        store: Store,
        attempt: int,
        decision: ApprovalDecision | None,
        problem: str,
    ) -> None:
        """Keep an unverifiable decision as evidence (store and ledger), once per attempt."""
        claimed = f"unverified:{decision.approver if decision is not None else '?'}"
        channel = decision.channel if decision is not None else "?"
        get_run_logger().warning(
            "Approval %s: resume %d refused (%s); still waiting for a verified decision",
            request.id,
            attempt,
            problem,
        )
        if await store.record_attempt(
            request.id, attempt, claimed_by=claimed, channel=channel, problem=problem
        ):
            await Ledger(store).append_attempt(
                approval_id=request.id,
                attempt=attempt,
                incident_id=request.incident_id,
                tenant=request.tenant,
                claimed_by=claimed,
                plan_sha256s=request.sha256s,
                problem=problem,
            )

    async def _expired(self, request: ApprovalRequest, store: Store) -> ApprovalOutcome:
        """Nobody decided in time: ``on_timeout`` applies (``approve`` only where allowed)."""
        approve = request.on_timeout == "approve"
        reason = "no decision before the deadline" + (
            "; the policy approves these actions on timeout" if approve else ""
        )
        if await store.decide_approval(
            request.id, status="expired", decided_by="stanch:timeout", reason=reason
        ):
            await self._record(
                store, request, "expired", [ON_TIMEOUT_APPROVER] if approve else [], reason
            )
        return ApprovalOutcome(
            approval_id=request.id,
            status="expired",
            approved=list(request.sha256s) if approve else [],
            approvers=[ON_TIMEOUT_APPROVER] if approve else [],
            channel=EXPIRY_CHANNEL,
            reason=reason,
            decided_at=utcnow(),
        )

    async def _conclude(
        self, request: ApprovalRequest, store: Store, decision: ApprovalDecision
    ) -> ApprovalOutcome:
        """Record and return a verified decision."""
        if decision.channel == EXPIRY_CHANNEL:
            # The Slack service's signed expiry at the deadline.
            return await self._expired(request, store)
        approved = [h for h in request.sha256s if h in decision.approved]
        status: Literal["approved", "denied", "partial"] = (
            "approved"
            if len(approved) == len(request.plans)
            else "denied"
            if not approved
            else "partial"
        )
        # A two-person decision names its approvers comma-separated, in voting order.
        approvers = [f"{decision.channel}:{a}" for a in decision.approver.split(",") if a]
        approver = ",".join(approvers)
        if await store.decide_approval(
            request.id, status=status, decided_by=approver, reason=decision.reason
        ):
            # Once: a run re-executed after a suspend concludes the same decision again.
            await self._record(store, request, status, approvers, decision.reason)
            get_run_logger().info("Approval %s: %s by %s", request.id, status, approver)
        return ApprovalOutcome(
            approval_id=request.id,
            status=status,
            approved=approved,
            approvers=approvers,
            channel=decision.channel,
            reason=decision.reason,
            decided_at=decision.decided_at,
            stop_response=decision.stop_response and status == "denied",
        )

    @staticmethod
    async def _record(
        store: Store, request: ApprovalRequest, status: str, approvers: list[str], reason: str
    ) -> None:
        await Ledger(store).append_decision(
            approval_id=request.id,
            incident_id=request.incident_id,
            tenant=request.tenant,
            status=status,
            approvers=approvers,
            plan_sha256s=request.sha256s,
            reason=reason,
        )

    def _problem(self, decision: ApprovalDecision, request: ApprovalRequest) -> str | None:
        if decision.channel == "prefect-ui" and not decision.signature:
            # Anyone with Prefect access can fill the form: it counts only where the
            # tenant's policy says so, and never for more than one approver.
            if not request.allow_prefect_ui:
                return "the Prefect UI channel is not enabled by the tenant's policy"
        elif not verify_decision(self._key, decision):
            return "signature does not verify (not issued by a stanch approval channel)"
        if decision.approval_id != request.id:
            return f"decision answers {decision.approval_id}, not {request.id}"
        asked = set(request.sha256s)
        answered = set(decision.approved) | set(decision.denied)
        if answered != asked or set(decision.approved) & set(decision.denied):
            return "decision does not name exactly the plans that were asked about"
        if decision.stop_response and decision.approved:
            return "a false-positive stop approves nothing, yet the decision approves plans"
        if decision.channel == EXPIRY_CHANNEL:
            if decision.approved and request.on_timeout != "approve":
                return "an expiry may approve only where the policy approves on timeout"
            return None
        approvers = [a for a in decision.approver.split(",") if a]
        if decision.approved and len(set(approvers)) < request.required_approvals:
            return (
                f"approval needs {request.required_approvals} distinct approvers, "
                f"the decision names {len(set(approvers))}"
            )
        if decision.channel == CLI_CHANNEL:
            refused = cli_refusal(
                decision.approver, tenant=request.tenant, cli_users=request.cli_users
            )
            if refused is not None:
                return refused
        if decision.approved:
            for approver in approvers:
                mine = self_approval(
                    f"{decision.channel}:{approver}",
                    requester=request.requester,
                    excluded=request.excluded,
                )
                if mine is not None:
                    return f"{approver}: {mine}"
        return None


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def pause_description(request: ApprovalRequest) -> str:
    """The Markdown above the Prefect UI's Resume form: what is asked, and where to answer.

    Alert-derived text is not put here (the form renders Markdown); the plans are named
    by action and hash only.
    """
    lines = [
        f"**Approval {request.id}** for incident {request.incident_id}: "
        f"{len(request.plans)} action(s) wait for a decision.",
        "",
        "Approve in Slack or with `stanch approve " + request.id + "` (deny with "
        "`stanch deny " + request.id + " --reason …`). A resume here is ignored unless "
        "this tenant's policy allows Prefect-UI approval"
        + (" — it does." if request.allow_prefect_ui else " — it does not."),
        "",
        *(f"- `{p.action}` plan `{p.sha256[:12]}`" for p in request.plans[:20]),
    ]
    return "\n".join(lines)


def _recorded_outcome(request: ApprovalRequest, row: ApprovalRow) -> ApprovalOutcome:
    """The outcome of an approval decided in an earlier run, as that run acted on it."""
    approvers = [a for a in (row.decided_by or "").split(",") if a]
    return ApprovalOutcome(
        approval_id=row.id,
        status="approved",
        approved=list(request.sha256s),
        approvers=approvers,
        channel=approvers[0].split(":", 1)[0] if approvers else None,
        reason=row.reason or "",
        decided_at=row.decided_at or utcnow(),
    )


Resumer = Callable[[UUID, dict[str, Any]], Awaitable[None]]


async def _resume(flow_run_id: UUID, run_input: dict[str, Any]) -> None:
    await aresume_flow_run(flow_run_id, run_input=run_input)


async def wait_until_paused(flow_run_id: UUID, *, within: float = 30.0) -> None:
    """Wait until the run is paused and ready for input (the request row is written first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_paused():
                # Prefect sets Paused first and saves the input schema just after; a
                # resume in between fails with "Run input schema not found".
                keyset = run.state.state_details.run_input_keyset or {}
                if "schema" not in keyset:
                    return
                try:
                    await client.read_flow_run_input(flow_run_id, keyset["schema"])
                    return
                except ObjectNotFound:
                    pass
            if run.state is not None and run.state.is_final():
                raise ApprovalError(f"flow run {flow_run_id} already ended ({run.state.name})")
            if loop.time() > deadline:
                raise ApprovalError(f"flow run {flow_run_id} did not pause within {within:.0f}s")
            await asyncio.sleep(0.2)


async def submit_decision(
    store: Store,
    key: bytes,
    approval_id: str,
    *,
    approve: bool,
    approver: str,
    channel: str,
    reason: str,
    approved: Sequence[str] | None = None,
    stop_response: bool = False,
    resume: Resumer = _resume,
) -> ApprovalDecision:
    """Sign a decision on the plans of a pending request and resume its flow run.

    Args:
        store: where the request is.
        key: the approval HMAC key.
        approval_id: the request.
        approve: approve (the plans in ``approved``, else all of them) or deny all.
        approver: who decided, as the channel knows them (comma-separated for several).
        channel: ``cli``, ``slack``, ``simulated-analyst`` ...
        reason: the decider's words.
        approved: with ``approve``, exactly the plan hashes approved; the request's other
            plans are denied in the same signed decision.
        stop_response: with a denial, the incident is a false positive: stop the rest of
            its response.
        resume: resumes the run (Prefect's, unless a test replaces it).

    The request's own terms are enforced before anything is signed: a CLI operator must
    match the tenant policy's ``approvers.cli_users``, and nobody approves a request they
    caused or an incident about themselves (denying, i.e. withdrawing, is allowed). The
    flow checks the same again on the decision it receives.

    Raises:
        ApprovalError: no such request, it is no longer pending, its run is gone, or the
            plans named are not the request's, or the request's terms refuse this approver
            (the reason is in the message).
    """
    row = await store.get_approval(approval_id)
    if row is None:
        raise ApprovalError(f"no approval request {approval_id}")
    if row.status != "pending":
        raise ApprovalError(f"{approval_id} is already {row.status} (by {row.decided_by})")
    if row.flow_run_id is None:
        raise ApprovalError(f"{approval_id} has no flow run to resume")
    if channel == CLI_CHANNEL:
        refused = cli_refusal(
            approver, tenant=row.tenant, cli_users=list(row.plans.get("cli_users") or ())
        )
        if refused is not None:
            raise ApprovalError(f"{approval_id}: {refused}")
    if approve and channel != EXPIRY_CHANNEL:
        for who in (a for a in approver.split(",") if a):
            mine = self_approval(
                f"{channel}:{who}",
                requester=row.requester,
                excluded=list(row.plans.get("excluded") or ()),
            )
            if mine is not None:
                raise ApprovalError(f"{approval_id}: {who}: {mine}")
    needed = int(row.plans.get("required_approvals", 1))
    if (
        approve
        and channel != EXPIRY_CHANNEL
        and needed > len({a for a in approver.split(",") if a})
    ):
        # One operator cannot be two people: the flow would refuse it anyway.
        raise ApprovalError(
            f"{approval_id} needs {needed} distinct approvers; approve it in Slack, "
            "where each approver's click is counted"
        )
    hashes: list[str] = list(row.plans["sha256s"])
    chosen = hashes if approved is None else [h for h in hashes if h in set(approved)]
    if approve and approved is not None:
        strangers = sorted(set(approved) - set(hashes))
        if strangers or not chosen:
            raise ApprovalError(
                f"{approval_id}: approve at least one of its plans, and only its plans"
                + (f" ({', '.join(h[:12] for h in strangers)} is not one)" if strangers else "")
            )
    if approve and stop_response:
        raise ApprovalError("a false-positive stop is a denial; it approves nothing")
    fields: dict[str, Any] = {
        "approval_id": approval_id,
        "approved": chosen if approve else [],
        "denied": [h for h in hashes if h not in chosen] if approve else hashes,
        "approver": approver,
        "channel": channel,
        "reason": reason,
        "stop_response": stop_response,
        "decided_at": utcnow(),
        "signature": "0" * 64,
    }
    # Sign the JSON form the flow will see after the round trip through Prefect.
    unsigned = ApprovalDecision.model_validate(fields)
    signature = sign_decision(key, unsigned.model_dump(mode="json"))
    decision = unsigned.model_copy(update={"signature": signature})
    run_id = UUID(row.flow_run_id)
    await wait_until_paused(run_id)
    try:
        await resume(run_id, decision.model_dump(mode="json"))
    except Exception as exc:  # Prefect raises RuntimeError/NotPausedError; say which request
        raise ApprovalError(f"could not resume {approval_id}: {exc}") from exc
    return decision


def default_gate(settings: StanchSettings, tenant: str | None = None) -> ApprovalGate:
    """The approval channel the settings choose for ``tenant``: Slack, or the CLI pause.

    In Slack, a tenant with its own entry in ``STANCH_TENANTS`` has its requests posted
    in its own channel and decided by its own approvers when its policy names none; the
    global ``STANCH_SLACK_APPROVER_*`` settings apply only to tenants without an entry.
    """
    if settings.approval_channel == "slack":
        from flows.approval.slack_gate import SlackPauseGate

        chat = slack_chat(settings, tenant)
        if chat is None:
            raise ValueError(
                "approval_channel=slack needs STANCH_SLACK_BOT_TOKEN and STANCH_SLACK_CHANNEL"
            )
        own = settings.tenants.get(tenant or "")
        ids = own.slack_approver_ids if own else tuple(settings.slack_approver_ids)
        group = own.slack_approver_group if own else settings.slack_approver_group
        escalation = own.slack_escalation_group if own else settings.slack_escalation_group
        return SlackPauseGate(
            settings.approval_key(),
            chat,
            poll_seconds=settings.approval_poll_seconds,
            approver_ids=tuple(ids),
            approver_group=group,
            escalation_group=escalation,
            suspend_after_seconds=settings.approval_suspend_after_seconds,
        )
    return PrefectPauseGate(
        settings.approval_key(),
        poll_seconds=settings.approval_poll_seconds,
        suspend_after_seconds=settings.approval_suspend_after_seconds,
    )
