"""Case buttons in Slack: "Take it", "Add note" and "Close…" on the incident's summary.

Authorised like approvals: the route verified the signature; here the click must come
from the workspace, be on the incident's stored summary message, and come from one of the
tenant's analysts (the policy's Slack approvers, else the configured ones; deleted, bot
and guest accounts refused). The change is recorded as ``slack:<user id>`` in the case and
the ledger, and the summary is redrawn in place. Refusals are shown to the clicker only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from flows.approval.service import Handled
from flows.errors import CaseError, ConfigurationError
from flows.policy import RulesFile, policy_for_tenant
from flows.record import CaseBook, Store, redraw_summary
from flows.settings import StanchSettings, policy_directory
from integrations.errors import IntegrationError
from integrations.slack import (
    Authorisation,
    Authoriser,
    CaseClick,
    CaseSubmission,
    Click,
    DenyReason,
    Interaction,
    SlackChat,
    close_modal,
    note_modal,
)

log = logging.getLogger("stanch.cases")


class CaseClickService:
    """Applies case clicks and modal submissions from Slack to incidents' cases.

    Args:
        store: the incident store.
        chat: the Slack calls (bot token).
        team_id: the only workspace whose clicks count.
        rules_for: each tenant's rules of engagement (who its analysts are).
        approver_ids, approver_group: the analysts when a tenant's policy names none.
    """

    def __init__(
        self,
        store: Store,
        chat: SlackChat,
        *,
        team_id: str,
        rules_for: Callable[[str], RulesFile],
        approver_ids: tuple[str, ...] = (),
        approver_group: str | None = None,
    ) -> None:
        self.store = store
        self.book = CaseBook(store)
        self.chat = chat
        self.team_id = team_id
        self._rules_for = rules_for
        self._fallback = (frozenset(approver_ids), approver_group)
        self._authorisers: dict[tuple[frozenset[str], str | None], Authoriser] = {}

    async def handle(self, interaction: CaseClick | CaseSubmission) -> Handled:
        """Apply one verified, parsed case interaction. Never raises for Slack faults."""
        try:
            if isinstance(interaction, CaseClick):
                handled = await self._click(interaction)
            else:
                handled = await self._submitted(interaction)
        except IntegrationError as exc:
            log.warning("case %s: Slack call failed: %s", interaction.incident_id, exc)
            handled = Handled("error", f"Slack call failed: {type(exc).__name__}")
        log.info(
            "case %s: %s by %s -> %s (%s)",
            interaction.incident_id,
            interaction.action,
            interaction.user_id,
            handled.outcome,
            handled.detail,
        )
        return handled

    async def _click(self, click: CaseClick) -> Handled:
        if click.team_id != self.team_id:
            return Handled("refused", "click from another workspace")
        summary = await self.store.incident_summary(click.incident_id)
        row = await self.store.get_incident(click.incident_id)
        if summary is None or row is None:
            return await self._refuse(click, "stanch does not know this incident.")
        if (click.channel_id, click.message_ts) != (summary.channel, summary.ts):
            return await self._refuse(
                click, "This button is not on the incident's summary; use the summary."
            )
        allowed = await self._authorise(click.user_id, row.tenant)
        if not allowed.allowed:
            return await self._refuse(click, f"You may not work this incident: {allowed.reason}.")
        actor = f"slack:{click.user_id}"
        if click.action == "take":
            try:
                await self.book.assign(click.incident_id, actor, actor=actor)
            except CaseError as exc:
                return await self._refuse(click, str(exc))
            await redraw_summary(self.store, self.chat, click.incident_id)
            await self._tell(click, f"You have taken {click.incident_id}.")
            return Handled("final", f"assigned to {actor}", status="assigned")
        modal = note_modal if click.action == "note" else close_modal
        if not click.trigger_id:
            return await self._refuse(click, "Slack sent no trigger to open the form; try again.")
        await self.chat.aopen_view(click.trigger_id, modal(click.incident_id))
        return Handled("modal", f"asked for the {click.action} form")

    async def _submitted(self, submitted: CaseSubmission) -> Handled:
        if submitted.team_id != self.team_id:
            return Handled("refused", "submission from another workspace")
        summary = await self.store.incident_summary(submitted.incident_id)
        row = await self.store.get_incident(submitted.incident_id)
        if summary is None or row is None:
            return Handled("refused", "unknown incident")
        allowed = await self._authorise(submitted.user_id, row.tenant)
        if not allowed.allowed:
            text = f"You may not work {submitted.incident_id}: {allowed.reason}."
            await self._tell_in(summary.channel, submitted.user_id, text)
            return Handled("refused", text)
        actor = f"slack:{submitted.user_id}"
        try:
            if submitted.action == "note":
                await self.book.note(submitted.incident_id, submitted.text, actor=actor)
            else:
                await self.book.close(
                    submitted.incident_id,
                    disposition=submitted.disposition,
                    summary=submitted.text,
                    duplicate_of=submitted.duplicate_of,
                    actor=actor,
                )
        except CaseError as exc:
            text = f"{submitted.incident_id} was not changed: {exc}"
            await self._tell_in(summary.channel, submitted.user_id, text)
            return Handled("refused", text)
        await redraw_summary(self.store, self.chat, submitted.incident_id)
        done = "noted" if submitted.action == "note" else "closed"
        return Handled("final", f"{done} by {actor}", status=done)

    async def _authorise(self, user_id: str, tenant: str) -> Authorisation:
        approvers = self._rules_for(tenant).approvers
        ids, group = frozenset(approvers.slack_users), approvers.slack_group
        if not ids and group is None:
            ids, group = self._fallback
        key = (ids, group)
        if key not in self._authorisers:
            self._authorisers[key] = Authoriser(
                self.chat, user_ids=ids, usergroup_id=group, team_id=self.team_id
            )
        return await self._authorisers[key].acheck(user_id)

    async def _refuse(self, click: CaseClick, text: str) -> Handled:
        await self._tell(click, text)
        return Handled("refused", text)

    async def _tell(self, click: CaseClick, text: str) -> None:
        """Ephemeral, to the clicker only; a failure to tell is logged, never raised."""
        try:
            if click.response_url:
                await self.chat.atell_user(text, response_url=click.response_url)
            else:
                await self.chat.atell_user(text, channel=click.channel_id, user=click.user_id)
        except (IntegrationError, ValueError) as exc:
            log.warning("case %s: could not tell %s: %s", click.incident_id, click.user_id, exc)

    async def _tell_in(self, channel: str, user_id: str, text: str) -> None:
        try:
            await self.chat.atell_user(text, channel=channel, user=user_id)
        except (IntegrationError, ValueError) as exc:
            log.warning("case: could not tell %s: %s", user_id, exc)


def interaction_router(
    approvals: Callable[[Click | DenyReason], Coroutine[Any, Any, Handled]],
    cases: CaseClickService | None,
) -> Callable[[Interaction], Coroutine[Any, Any, Handled]]:
    """One handler for every Slack interaction: case ones to ``cases``, the rest (approval
    clicks and deny reasons) to ``approvals`` (``ApprovalService.handle``)."""

    async def handle(interaction: Interaction) -> Handled:
        if isinstance(interaction, CaseClick | CaseSubmission):
            if cases is None:
                return Handled("refused", "case buttons are not served here")
            return await cases.handle(interaction)
        return await approvals(interaction)

    return handle


def slack_case_service(store: Store, chat: SlackChat, settings: StanchSettings) -> CaseClickService:
    """The case-button service the settings describe: the workspace, each tenant's policy
    (its Slack approvers are its analysts), and the configured approvers as the fallback.

    Raises:
        ConfigurationError: no Slack team id is configured (clicks would have no workspace).
    """
    if settings.slack_team_id is None:
        raise ConfigurationError("Slack case buttons need STANCH_SLACK_TEAM_ID")
    policies = policy_directory(settings.policies_dir)
    rules: dict[str, RulesFile] = {}

    def rules_for(tenant: str) -> RulesFile:
        if tenant not in rules:
            rules[tenant] = policy_for_tenant(policies, tenant).rules
        return rules[tenant]

    return CaseClickService(
        store,
        chat,
        team_id=settings.slack_team_id,
        rules_for=rules_for,
        approver_ids=tuple(settings.slack_approver_ids),
        approver_group=settings.slack_approver_group,
    )
