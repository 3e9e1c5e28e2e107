"""The ``undo-incident`` flow: reverse what an incident's response still has in effect.

The inverse of every executed, reversible action the ledger shows in effect (release the
host, unsuspend the user, unblock the address and the hash) becomes an action plan that
goes through the tenant's policy and the approval gate like any other: undoing
containment is itself a decision someone must own. A user given back has their password
expired right after the unsuspend: the suspension was for credentials an attacker may
hold, and Okta expires only an active account's password.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows import wiring
from flows.approval import AUTOMATION_REQUESTER, default_gate
from flows.errors import StanchError
from flows.models import ActionPlan, ActionResult, Incident, Stage
from flows.playbook import PlannedAction
from flows.policy import policy_or_fail_safe
from flows.record import Ledger, Store, open_store
from flows.respond.executor import Responder
from flows.settings import load_settings, policy_directory


async def inverse_plans(store: Store, incident: Incident) -> list[ActionPlan]:
    """The plans that undo what the incident's response still has in effect."""
    return [effect.inverse_plan() for effect in await Ledger(store).in_effect(incident.id)]


def undo_steps(plans: list[ActionPlan]) -> list[PlannedAction]:
    """The inverse plans as steps, each unsuspend followed by that user's password expiry.

    The expiry runs only once its unsuspend has succeeded (a suspended user's password
    cannot be expired).
    """
    steps: list[PlannedAction] = []
    for plan in plans:
        step = f"undo {plan.action} {plan.target}"
        steps.append(PlannedAction(step=step, plan=plan))
        if plan.verb == "unsuspend_user":
            expire = ActionPlan.model_validate(
                {**plan.model_dump(), "verb": "expire_password", "parameters": {}}
            )
            steps.append(PlannedAction(step=f"after {step}", plan=expire, after=(step,)))
    return steps


@flow(name="undo-incident", flow_run_name="undo {incident_id}", log_prints=False)
async def undo_incident(
    incident_id: str, requester: str = AUTOMATION_REQUESTER
) -> list[ActionResult]:
    """Build, authorise and execute the inverse plans of an incident.

    Args:
        incident_id: the incident to undo.
        requester: who asked (``cli:<user>@<host>`` for ``stanch undo``); they may not
            approve the undo themselves.

    Raises:
        StanchError: the incident is not in the store.
    """
    settings = load_settings()
    run_id = flow_run.get_id()
    async with open_store(settings.store_url) as store:
        row = await store.get_incident(incident_id)
        if row is None:
            raise StanchError(f"no incident {incident_id} in the store")
        incident = Incident.model_validate(row.document)
        plans = await inverse_plans(store, incident)
        async with wiring.connect(settings, tenant=incident.tenant) as integrations:
            responder = Responder(
                incident,
                settings=settings,
                store=store,
                integrations=integrations,
                gate=default_gate(settings, incident.tenant),
                # A tenant policy that does not load means a person approves every undo.
                policy=policy_or_fail_safe(
                    policy_directory(settings.policies_dir), incident.tenant
                )[0],
                flow_run_id=str(run_id) if run_id else None,
                requester=requester,
            )
            if plans:
                await responder.authorise_and_execute(Stage.REMEDIATE, undo_steps(plans))
        return responder.actions
