"""Compensation: undo a containment step when the stage it belonged to failed half-way.

Containment runs all-or-none in one Prefect transaction; when it rolls back, each step that
changed something is undone here by its inverse plan, through the same executor as any
action (idempotent, recorded in the store and the ledger), on the authority of the failed
stage's transaction.
"""

from __future__ import annotations

from prefect.logging import get_run_logger

from flows import wiring
from flows.models import ActionResult, ActionStatus, Verdict
from flows.record import Ledger, Store
from flows.tasks import execute_action

ROLLBACK_AUTHORITY = "policy:rollback"
"""Who authorised a compensating action: the failed stage's own transaction."""


async def compensate(
    result: ActionResult, *, store: Store, integrations: wiring.Integrations, incident_id: str
) -> list[ActionResult]:
    """Undo what one containment step changed. Never raises.

    Only a step that changed something (``executed``) is undone.

    Returns:
        The results of the inverse actions that ran (none when there was nothing to undo,
        or when undoing failed: that is logged, and the action stays in effect).
    """
    if result.status != ActionStatus.EXECUTED:
        return []
    logger = get_run_logger()
    plan = result.plan
    undone: list[ActionResult] = []
    try:
        for effect in await Ledger(store).in_effect(incident_id):
            entry = effect.entry
            if (entry.capability, entry.verb, entry.target) != (
                plan.capability.value,
                plan.verb,
                plan.target,
            ):
                continue
            inverse = effect.inverse_plan()
            outcome = await execute_action.fn(
                inverse,
                inverse.sha256,
                integrations.adapter(inverse.capability),
                store,
                verdict=Verdict.UNATTENDED,
                approved_by=[ROLLBACK_AUTHORITY],
            )
            undone.append(outcome)
            logger.warning("Rolled back %s: %s", plan.action, outcome.status)
    except Exception as exc:  # a rollback hook that raises would abort the other rollbacks
        logger.error(
            "Could not roll back %s %s (%s: %s); it stays in effect: `stanch undo %s` lists it",
            plan.action,
            plan.target_label,
            type(exc).__name__,
            exc,
            incident_id,
        )
    return undone
