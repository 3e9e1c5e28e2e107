"""The stanch approval service's core: Slack clicks in, signed decisions out, and the sweeper.

Transport-agnostic: the HTTP route and the Socket Mode runner (:mod:`stanch.slack_listener`)
verify and parse an interaction, acknowledge it, and hand the parsed :class:`Click` or
:class:`DenyReason` to :meth:`ApprovalService.handle`. Here the click is checked against the
stored message binding, the clicker is authorised (allow-list or user group; deleted, bot
and guest accounts refused), and the rules are applied with the votes kept in the store:

* deny wins: one eligible Deny ends the request as denied;
* no self-approval: the requester may deny (withdraw) but not approve;
* N distinct approvers: approvals are a set of user ids, a repeat click is a no-op;
* a request is decided once: the final outcome is claimed by compare-and-set, so a click
  and the sweeper's expiry cannot both resume the run.

Only a final outcome resumes the flow run (through :func:`flows.approval.submit_decision`,
which signs it); then the message is updated to show who decided, without buttons.
Refusals are shown only to the clicker. The sweeper (:meth:`ApprovalService.sweep`,
:func:`run_sweeper`) posts reminders, escalates to a second user group, and expires a
request at its deadline with a signed "no", so the flow takes its no-action branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from slack_sdk.errors import SlackApiError, SlackClientError

from flows.approval.gate import submit_decision
from flows.approval.request import EXPIRY_CHANNEL, self_approval
from flows.errors import ApprovalError, ConfigurationError
from flows.models import utcnow
from flows.record import ApprovalRow, SlackApprovalRow, Store
from flows.settings import StanchSettings
from integrations.errors import IntegrationError
from integrations.slack import (
    ApprovalView,
    Authorisation,
    Authoriser,
    Click,
    Decision,
    DenyReason,
    FinalState,
    SlackChat,
    WrongMessage,
    ensure_same_message,
)

log = logging.getLogger("stanch.approvals")

SLACK_CHANNEL = "slack"
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,31}")

Outcome = Literal["refused", "recorded", "duplicate", "modal", "already-decided", "final", "error"]


@dataclass(frozen=True)
class Handled:
    """What a click or modal submission led to (for tests, logs and the audit trail).

    Attributes:
        outcome: ``refused`` (not allowed), ``recorded`` (a vote, not yet final),
            ``duplicate`` (a repeat click), ``modal`` (the deny-reason modal was opened),
            ``already-decided``, ``final`` (the run was resumed) or ``error``.
        detail: what the clicker was told, or why.
        status: the final status when ``outcome`` is ``final``.
    """

    outcome: Outcome
    detail: str
    status: str | None = None


class DecisionSubmitter(Protocol):
    """:func:`flows.approval.submit_decision`'s shape: sign and resume."""

    async def __call__(
        self,
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
    ) -> Any: ...


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class ApprovalService:
    """Applies Slack clicks to approval requests and resumes flow runs on final outcomes.

    Args:
        store: the incident store holding approvals, their Slack bindings and votes.
        chat: the Slack calls (bot token).
        key: the approval HMAC key, shared with the flows.
        team_id: the only workspace whose clicks count.
        escalation_group: a user group that may also decide once a request is escalated.
        reminder_every: how often a pending request is reminded in its thread.
        escalate_after: how long after posting a pending request is escalated.
        ask_deny_reason: open the deny-reason modal on Deny (else deny at once).
        submit: signs and resumes; :func:`submit_decision` unless a test replaces it.
        now: the clock.
    """

    def __init__(
        self,
        store: Store,
        chat: SlackChat,
        key: bytes,
        *,
        team_id: str,
        escalation_group: str | None = None,
        reminder_every: timedelta = timedelta(minutes=10),
        escalate_after: timedelta = timedelta(minutes=20),
        ask_deny_reason: bool = True,
        submit: DecisionSubmitter = submit_decision,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.chat = chat
        self._key = key
        self.team_id = team_id
        self.escalation_group = escalation_group
        self.reminder_every = reminder_every
        self.escalate_after = escalate_after
        self.ask_deny_reason = ask_deny_reason
        self._submit = submit
        self._now = now
        self._locks: dict[str, asyncio.Lock] = {}
        self._authorisers: dict[tuple[frozenset[str], str | None], Authoriser] = {}

    # clicks ---------------------------------------------------------------------------------

    async def handle(self, interaction: Click | DenyReason) -> Handled:
        """Apply one verified, parsed interaction. Never raises for Slack or resume faults."""
        lock = self._locks.setdefault(interaction.approval_id, asyncio.Lock())
        async with lock:
            try:
                if isinstance(interaction, Click):
                    handled = await self._click(interaction)
                else:
                    handled = await self._deny_reason(interaction)
            except IntegrationError as exc:
                log.warning("approval %s: Slack call failed: %s", interaction.approval_id, exc)
                handled = Handled("error", f"Slack call failed: {type(exc).__name__}")
        log.info(
            "approval %s: %s by %s -> %s (%s)",
            interaction.approval_id,
            interaction.kind,
            interaction.user_id,
            handled.outcome,
            handled.detail,
        )
        return handled

    async def _click(self, click: Click) -> Handled:
        if click.team_id != self.team_id:
            return Handled("refused", "click from another workspace")  # nobody to tell safely
        row = await self.store.get_approval(click.approval_id)
        binding = await self.store.slack_approval(click.approval_id)
        if row is None or binding is None:
            return await self._refuse(click, "stanch does not know this approval request.")
        try:
            ensure_same_message(click, channel_id=binding.channel, message_ts=binding.ts)
        except WrongMessage:
            return await self._refuse(
                click, "This button is not on the approval message; use the original message."
            )
        if row.status != "pending" or binding.final is not None:
            return await self._already_decided(click, row, binding)
        allowed = await self._authorise(click.user_id, binding)
        if not allowed.allowed:
            return await self._refuse(click, f"You may not decide this request: {allowed.reason}.")
        if click.action == Decision.APPROVE:
            return await self._approve(click, row, binding, None)
        if click.action == Decision.APPROVE_SELECTED:
            selected = await self._selection(click, row, binding)
            if isinstance(selected, Handled):
                return selected
            return await self._approve(click, row, binding, selected)
        stop = click.action == Decision.DENY_STOP
        if self.ask_deny_reason and click.trigger_id:
            try:
                await self.chat.aopen_deny_modal(
                    click.trigger_id, row.id, row.incident_id, stop=stop
                )
            except IntegrationError as exc:
                log.warning("approval %s: deny modal failed (%s); denying", row.id, exc)
            else:
                return Handled("modal", "asked for a deny reason")
        await self.store.add_vote(row.id, click.user_id, "deny")
        reason = "denied in Slack as a false positive" if stop else "denied in Slack"
        return await self._finish(
            row, binding, "denied", [click.user_id], reason, click=click, stop=stop
        )

    async def _selection(
        self, click: Click, row: ApprovalRow, binding: SlackApprovalRow
    ) -> list[str] | Handled | None:
        """The plans ticked for *Approve selected*: ``None`` when that is all of them.

        Returns a refusal (already told to the clicker) when the selection cannot count.
        """
        asked: list[str] = list(row.plans.get("sha256s") or [])
        if binding.required_approvals > 1:
            text = (
                f"This request needs {binding.required_approvals} approvers, who all approve "
                "the same actions: use Approve all, or Deny."
            )
            return await self._refuse(click, text)
        if click.selected is None:
            # Never guess a selection Slack did not send.
            return await self._refuse(
                click,
                "Slack did not say which actions are ticked; nothing was approved. "
                "Tick them again and click Approve selected, or use Approve all.",
            )
        chosen = [h for h in asked if h in click.selected]
        if set(click.selected) - set(asked):
            return await self._refuse(click, "The ticked actions are not this request's.")
        if not chosen:
            return await self._refuse(
                click, "No action is ticked; nothing was approved. Tick some, or use Deny."
            )
        return None if len(chosen) == len(asked) else chosen

    async def _approve(
        self,
        click: Click,
        row: ApprovalRow,
        binding: SlackApprovalRow,
        selected: list[str] | None,
    ) -> Handled:
        mine = await self._self_approval(click.user_id, row)
        if mine is not None:
            return await self._refuse(click, f"You may not approve this request: {mine}.")
        if not await self.store.add_vote(row.id, click.user_id, "approve"):
            need = binding.required_approvals
            text = "You have already approved this request."
            if need > 1:
                text += f" It needs {need} different approvers."
            await self._tell(click, text)
            return Handled("duplicate", text)
        approvers = await self._approvers(row.id)
        if len(approvers) < binding.required_approvals:
            text = (
                f"Your approval is recorded ({len(approvers)} of {binding.required_approvals}); "
                "waiting for another approver."
            )
            await self._tell(click, text)
            return Handled("recorded", text)
        if selected is not None:
            return await self._finish(
                row,
                binding,
                "partial",
                approvers,
                f"approved {len(selected)} of {len(row.plans.get('sha256s') or [])} in Slack",
                click=click,
                approved=selected,
            )
        return await self._finish(
            row, binding, "approved", approvers, "approved in Slack", click=click
        )

    async def _deny_reason(self, submitted: DenyReason) -> Handled:
        if submitted.team_id != self.team_id:
            return Handled("refused", "submission from another workspace")
        row = await self.store.get_approval(submitted.approval_id)
        binding = await self.store.slack_approval(submitted.approval_id)
        if row is None or binding is None:
            return Handled("refused", "unknown approval request")
        if row.status != "pending" or binding.final is not None:
            await self._tell_in_channel(
                binding, submitted.user_id, "This request is already decided."
            )
            return Handled("already-decided", f"already {binding.final or row.status}")
        allowed = await self._authorise(submitted.user_id, binding)
        if not allowed.allowed:
            text = f"You may not decide this request: {allowed.reason}."
            await self._tell_in_channel(binding, submitted.user_id, text)
            return Handled("refused", text)
        await self.store.add_vote(row.id, submitted.user_id, "deny", submitted.reason)
        return await self._finish(
            row, binding, "denied", [submitted.user_id], submitted.reason, stop=submitted.stop
        )

    async def _self_approval(self, user_id: str, row: ApprovalRow) -> str | None:
        """Why ``user_id`` may not approve ``row`` (they caused it, or it is about them)."""
        excluded = list(row.plans.get("excluded") or ())
        mine = self_approval(
            f"{SLACK_CHANNEL}:{user_id}", requester=row.requester, excluded=excluded
        )
        if mine is not None or not excluded:
            return mine
        # The incident's subjects are logins; a Slack account is matched to them by its
        # directory email, or by its username where Slack gives no email.
        facts = await asyncio.to_thread(self.chat.user_facts, user_id)
        for identity in (facts.email, facts.name):
            if identity and self_approval(identity, requester="", excluded=excluded):
                return "you are a subject of this incident; someone else must approve it"
        return None

    async def _approvers(self, approval_id: str) -> list[str]:
        seen: list[str] = []
        for vote in await self.store.votes(approval_id):
            if vote.vote == "approve" and vote.user_id not in seen:
                seen.append(vote.user_id)
        return seen

    async def _authorise(self, user_id: str, binding: SlackApprovalRow) -> Authorisation:
        ids = frozenset(str(u) for u in binding.eligible.get("user_ids") or ())
        group = binding.eligible.get("group") or None
        answer = await self._authoriser(ids, group).acheck(user_id)
        escalation = self._escalation_group(binding)
        if answer.allowed or binding.escalated_at is None or escalation is None:
            return answer
        escalated = await self._authoriser(frozenset(), escalation).acheck(user_id)
        return escalated if escalated.allowed else answer

    def _escalation_group(self, binding: SlackApprovalRow) -> str | None:
        """The request's own escalation group (its tenant's), else the service's."""
        if "escalation_group" in binding.eligible:
            group = binding.eligible.get("escalation_group")
            return str(group) if group else None
        return self.escalation_group  # a request posted before escalation was per tenant

    def _authoriser(self, ids: frozenset[str], group: str | None) -> Authoriser:
        key = (ids, group)
        if key not in self._authorisers:
            self._authorisers[key] = Authoriser(
                self.chat, user_ids=ids, usergroup_id=group, team_id=self.team_id
            )
        return self._authorisers[key]

    async def _finish(
        self,
        row: ApprovalRow,
        binding: SlackApprovalRow,
        status: Literal["approved", "partial", "denied"],
        deciders: Sequence[str],
        reason: str,
        *,
        click: Click | None = None,
        approved: Sequence[str] | None = None,
        stop: bool = False,
    ) -> Handled:
        if not await self.store.claim_final(row.id, status):
            binding = await self.store.slack_approval(row.id) or binding
            if click is not None:
                return await self._already_decided(click, row, binding)
            return Handled("already-decided", "decided meanwhile")
        try:
            await self._submit(
                self.store,
                self._key,
                row.id,
                approve=status != "denied",
                approver=",".join(deciders),
                channel=SLACK_CHANNEL,
                reason=reason,
                approved=approved,
                stop_response=stop,
            )
        except ApprovalError as exc:
            current = await self.store.get_approval(row.id)
            if current is not None and current.status == "pending":
                await self.store.release_final(row.id)  # let a later click try again
            text = "stanch could not resume the incident flow; try again shortly."
            log.warning("approval %s: resume failed: %s", row.id, exc)
            if click is not None:
                await self._tell(click, text)
            return Handled("error", str(exc))
        state = FinalState(
            status=status,
            by=list(deciders),
            at=self._now(),
            reason=reason,
            approved=list(approved or []),
            stopped=stop,
        )
        await self._mark(binding, state)
        return Handled("final", f"{status} by {', '.join(deciders)}", status=status)

    async def _mark(self, binding: SlackApprovalRow, state: FinalState) -> None:
        try:
            await self.chat.amark_decided(
                binding.channel, binding.ts, ApprovalView.model_validate(binding.view), state
            )
        except IntegrationError as exc:  # the decision stands; the message is cosmetic
            log.warning("approval %s: message update failed: %s", binding.approval_id, exc)

    async def _already_decided(
        self, click: Click, row: ApprovalRow, binding: SlackApprovalRow
    ) -> Handled:
        status = binding.final or row.status
        await self._tell(click, f"This request is already {status}.")
        return Handled("already-decided", f"already {status}")

    async def _refuse(self, click: Click, text: str) -> Handled:
        await self._tell(click, text)
        return Handled("refused", text)

    async def _tell(self, click: Click, text: str) -> None:
        """Ephemeral, to the clicker only; a failure to tell is logged, never raised."""
        try:
            if click.response_url:
                await self.chat.atell_user(text, response_url=click.response_url)
            else:
                await self.chat.atell_user(text, channel=click.channel_id, user=click.user_id)
        except (IntegrationError, ValueError) as exc:
            log.warning("approval %s: could not tell %s: %s", click.approval_id, click.user_id, exc)

    async def _tell_in_channel(self, binding: SlackApprovalRow, user_id: str, text: str) -> None:
        try:
            await self.chat.atell_user(text, channel=binding.channel, user=user_id)
        except (IntegrationError, ValueError) as exc:
            log.warning("approval %s: could not tell %s: %s", binding.approval_id, user_id, exc)

    # the sweeper ----------------------------------------------------------------------------

    async def sweep(self) -> list[tuple[str, str]]:
        """One pass over pending Slack approvals: expire, escalate or remind.

        Returns:
            ``(approval id, what was done)`` for each request acted on.
        """
        done: list[tuple[str, str]] = []
        now = self._now()
        for row, binding in await self.store.pending_slack_approvals():
            try:
                if now >= _aware(row.deadline):
                    done.append((row.id, await self._expire(row, binding)))
                elif (
                    self._escalation_group(binding) is not None
                    and binding.escalated_at is None
                    and now - _aware(binding.posted_at) >= self.escalate_after
                ):
                    await self._escalate(row, binding, now)
                    done.append((row.id, "escalated"))
                elif now - _aware(binding.reminded_at or binding.posted_at) >= self.reminder_every:
                    await self.chat.apost_thread_summary(
                        binding.channel,
                        binding.ts,
                        f"Reminder: approval {row.id} for {row.incident_id} is still waiting; "
                        f"it expires at {_aware(row.deadline):%Y-%m-%d %H:%M} UTC.",
                    )
                    await self.store.touch_slack_approval(row.id, reminded_at=now)
                    done.append((row.id, "reminded"))
            except IntegrationError as exc:
                log.warning("approval %s: sweeper Slack call failed: %s", row.id, exc)
        return done

    async def _expire(self, row: ApprovalRow, binding: SlackApprovalRow) -> str:
        if not await self.store.claim_final(row.id, "expired"):
            return "already decided"
        reason = "no decision before the deadline"
        try:
            # The flow applies the request's on_timeout to a signed expiry, and accepts an
            # expiry that approves only where that is the policy's approve.
            await self._submit(
                self.store,
                self._key,
                row.id,
                approve=row.plans.get("on_timeout") == "approve",
                approver="stanch",
                channel=EXPIRY_CHANNEL,
                reason=reason,
            )
            result = "expired"
        except ApprovalError as exc:
            # The run is gone (or never paused): record the expiry so nobody acts later.
            log.warning("approval %s: expiry could not resume the run: %s", row.id, exc)
            await self.store.decide_approval(
                row.id, status="expired", decided_by="stanch:expiry", reason=reason
            )
            result = "expired (run not resumable)"
        await self._mark(binding, FinalState(status="expired", at=self._now()))
        return result

    async def _escalate(self, row: ApprovalRow, binding: SlackApprovalRow, now: datetime) -> None:
        group = self._escalation_group(binding) or ""
        # The only control sequence sent: a mention of a validated user group id.
        mention = f"<!subteam^{group}> " if _GROUP_ID.fullmatch(group) else ""
        text = f"{mention}Approval {row.id} is still waiting; escalated to this group."
        await self.store.touch_slack_approval(row.id, escalated_at=now)
        try:
            await asyncio.to_thread(
                self.chat.client.chat_postMessage,
                channel=binding.channel,
                thread_ts=binding.ts,
                text=text,
                unfurl_links=False,
                unfurl_media=False,
            )
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("approval %s: escalation notice failed: %s", row.id, type(exc).__name__)


async def run_sweeper(service: ApprovalService, *, every: float = 5.0, stop: asyncio.Event) -> None:
    """Sweep every ``every`` seconds until ``stop`` is set; a failed pass is logged."""
    while not stop.is_set():
        try:
            await service.sweep()
        except Exception:  # keep sweeping: one bad pass must not end expiry for all
            log.exception("approval sweeper pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


def slack_approval_service(store: Store, settings: StanchSettings) -> ApprovalService:
    """The Slack approval service the settings describe (bot token, channel, workspace,
    escalation group and timings), as ``stanch serve`` runs it.

    Raises:
        ConfigurationError: a setting the service needs is missing (named).
    """
    from slack_sdk import WebClient

    from integrations.slack import SlackChat

    token, channel, team = settings.slack_bot_token, settings.slack_channel, settings.slack_team_id
    if token is None or channel is None or team is None:
        named = {
            "STANCH_SLACK_BOT_TOKEN": token,
            "STANCH_SLACK_CHANNEL": channel,
            "STANCH_SLACK_TEAM_ID": team,
        }
        missing = ", ".join(name for name, value in named.items() if value is None)
        raise ConfigurationError(f"Slack approvals need {missing}")
    client = WebClient(token=token.get_secret_value(), base_url=settings.slack_base_url, timeout=10)
    return ApprovalService(
        store,
        SlackChat(client, channel=channel),
        settings.approval_key(),
        team_id=team,
        escalation_group=settings.slack_escalation_group,
        reminder_every=timedelta(seconds=settings.slack_reminder_seconds),
        escalate_after=timedelta(seconds=settings.slack_escalate_after_seconds),
    )
