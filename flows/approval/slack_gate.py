"""The Slack approval gate: post the Block Kit request, bind it, then pause for the decision.

The flow side of Slack approvals. Before pausing, the gate posts the approval message with
the two buttons and stores where it is (channel + ``ts``), how many distinct approvers are
needed and who is eligible. The stanch service (:mod:`flows.approval.service`) handles the
clicks, runs reminders, escalation and expiry, and resumes the run with a signed decision;
the flow only ever acts on a decision whose HMAC verifies.

The pause's own timeout is the deadline plus a grace period: the service expires the
request at the deadline (a Prefect pause that times out can no longer be resumed), and the
pause timeout is only the backstop for a service that is down.
"""

from __future__ import annotations

from prefect.logging import get_run_logger
from prefect.utilities.urls import url_for

from flows.approval.gate import PrefectPauseGate
from flows.approval.request import EXPIRY_CHANNEL, ApprovalOutcome, ApprovalRequest
from flows.models import utcnow
from flows.record import SlackApprovalRow, Store
from integrations.errors import IntegrationError
from integrations.slack import ApprovalView, FinalState, MessageRef, PlanView, SlackChat

DEFAULT_GRACE_SECONDS = 60
SLACK_CHANNEL = "slack"


def flow_run_url(flow_run_id: str | None) -> str:
    """The Prefect UI page of a flow run, when the UI's address is known (else ``""``)."""
    if not flow_run_id:
        return ""
    return url_for("flow-run", obj_id=flow_run_id) or ""


def approval_view(request: ApprovalRequest) -> ApprovalView:
    """What the approval message shows for ``request`` (the builders escape alert text)."""
    context = request.context
    return ApprovalView(
        approval_id=request.id,
        incident_id=request.incident_id,
        incident_title=request.incident_title or request.incident_id,
        tenant=request.tenant,
        severity=context.severity,
        verdict=context.verdict,
        risk_score=context.risk_score,
        requester=request.requester,
        evidence=[*context.evidence, *(f"Assessment: {r}" for r in context.assessment)],
        techniques=list(context.techniques),
        hunt=list(context.hunt),
        intel=list(context.intel),
        plans=[
            PlanView(
                action=p.action,
                target=p.target,
                target_label=p.target_label,
                vendor=context.vendors.get(p.capability.value, ""),
                parameters=dict(p.parameters),
                sha256=p.sha256,
                policy_reason=request.reasons.get(p.sha256, ""),
            )
            for p in request.plans
        ],
        deadline=request.deadline,
        required_approvals=request.required_approvals,
        flow_run_url=flow_run_url(request.flow_run_id),
    )


def final_state(outcome: ApprovalOutcome) -> FinalState | None:
    """How the message should end for an outcome decided outside Slack (CLI, timeout)."""
    if outcome.status == "expired":
        return FinalState(status="expired", at=outcome.decided_at)
    if outcome.status == "approved":
        return FinalState(status="approved", by=outcome.approvers, at=outcome.decided_at)
    if outcome.status == "partial":
        return FinalState(
            status="partial",
            by=outcome.approvers,
            at=outcome.decided_at,
            approved=outcome.approved,
        )
    if outcome.status == "denied":
        return FinalState(
            status="denied",
            by=outcome.approvers,
            at=outcome.decided_at,
            reason=outcome.reason,
            stopped=outcome.stop_response,
        )
    return None  # rejected: a forged resume; the buttons stay for the real approvers


async def post_and_bind(
    chat: SlackChat, store: Store, request: ApprovalRequest, eligible: dict[str, object]
) -> MessageRef:
    """Post the approval message and store its binding (channel, ts, view, rules).

    Raises:
        IntegrationError: Slack refused or could not be reached; nothing was stored.
    """
    view = approval_view(request)
    ref = await chat.apost_approval(view)
    await store.bind_slack_message(
        SlackApprovalRow(
            approval_id=request.id,
            channel=ref.channel,
            ts=ref.ts,
            view=view.model_dump(mode="json"),
            required_approvals=request.required_approvals,
            eligible=eligible,
            posted_at=utcnow(),
        )
    )
    return ref


class SlackPauseGate(PrefectPauseGate):
    """:class:`PrefectPauseGate` that asks in Slack first.

    Args:
        key: the approval HMAC key.
        chat: the Slack calls (bot token, and the tenant's approval channel).
        timeout_seconds: unused; each request carries its policy's timeout, and the pause
            waits ``grace_seconds`` longer so the service's expiry arrives first.
        poll_seconds: how often the paused run checks for a resume (0.2 to 10 s).
        approver_ids, approver_group: who may decide when the policy names no Slack
            approvers.
        escalation_group: the group a waiting request escalates to (stored with it).
        grace_seconds: the extra time the pause waits beyond the deadline.
        suspend_after_seconds: see :class:`flows.approval.PrefectPauseGate`.
    """

    def __init__(
        self,
        key: bytes,
        chat: SlackChat,
        *,
        timeout_seconds: int | None = None,
        poll_seconds: float,
        approver_ids: tuple[str, ...] = (),
        approver_group: str | None = None,
        escalation_group: str | None = None,
        grace_seconds: int = DEFAULT_GRACE_SECONDS,
        suspend_after_seconds: int | None = None,
    ) -> None:
        super().__init__(
            key,
            poll_seconds=poll_seconds,
            suspend_after_seconds=suspend_after_seconds,
            grace_seconds=grace_seconds,
        )
        self._chat = chat
        self._approver_ids = approver_ids
        self._approver_group = approver_group
        self._escalation_group = escalation_group

    def eligible(self, request: ApprovalRequest) -> dict[str, object]:
        """Who may decide: the policy's Slack approvers, else the configured ones; who the
        request escalates to; and who may never approve it (requester, subjects)."""
        if request.approver_ids or request.approver_group:
            who: dict[str, object] = {
                "user_ids": list(request.approver_ids),
                "group": request.approver_group,
            }
        else:
            who = {"user_ids": list(self._approver_ids), "group": self._approver_group}
        return {
            **who,
            "escalation_group": self._escalation_group,
            "tenant": request.tenant,
            "excluded": list(request.excluded),
        }

    async def _announce(self, request: ApprovalRequest, store: Store) -> None:
        logger = get_run_logger()
        try:
            ref = await post_and_bind(self._chat, store, request, self.eligible(request))
        except IntegrationError as exc:
            # The request still stands: the CLI can decide it and the pause times out.
            logger.warning("Approval %s: could not post to Slack: %s", request.id, exc)
            return
        logger.info("Approval %s posted to Slack %s/%s", request.id, ref.channel, ref.ts)

    async def _after(
        self, request: ApprovalRequest, store: Store, outcome: ApprovalOutcome
    ) -> None:
        # The service updates the message for Slack decisions and expiry; anything decided
        # elsewhere (the CLI, Prefect's timeout backstop) must still remove the buttons.
        if outcome.channel in (SLACK_CHANNEL, EXPIRY_CHANNEL):
            return
        binding = await store.slack_approval(request.id)
        state = final_state(outcome)
        if binding is None or state is None:
            return
        if not await store.claim_final(request.id, state.status):
            return
        try:
            await self._chat.amark_decided(
                binding.channel, binding.ts, ApprovalView.model_validate(binding.view), state
            )
        except IntegrationError as exc:
            get_run_logger().warning("Approval %s: could not update Slack: %s", request.id, exc)
