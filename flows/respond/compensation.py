"""Compensation: undo a containment step when the stage it belonged to failed half-way.

Containment runs all-or-none in one Prefect transaction; when it rolls back, each step that
changed something is undone here by its inverse plan, through the same executor as any
action (idempotent, recorded in the store and the ledger), on the authority of the failed
stage's transaction.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from prefect.logging import get_run_logger

from flows import wiring
from flows.models import ActionPlan, ActionResult, ActionStatus, Verdict, utcnow
from flows.record import Ledger, Store
from flows.tasks import execute_action, failed_result
from integrations.errors import RateLimited, TransientError

ROLLBACK_AUTHORITY = "policy:rollback"
"""Who authorised a compensating action: the failed stage's own transaction."""

STILL_IN_EFFECT = "still in effect after a failed rollback"
"""How the report, the Slack summary and the ledger name what a rollback could not undo."""

ROLLBACK_ATTEMPTS = 6
"""How often a compensating action is tried before it is given up as failed."""

ROLLBACK_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""The wait before each retry (a vendor's own Retry-After, up to 30 s, when longer)."""

_MAX_RETRY_AFTER = 30.0


async def compensate(
    result: ActionResult, *, store: Store, integrations: wiring.Integrations, incident_id: str
) -> list[ActionResult]:
    """Undo what one containment step changed. Never raises.

    Only a step that changed something (``executed``) is undone. The inverse is
    idempotent, so it is retried on transient faults (timeouts, 429, 5xx) with backoff,
    until it succeeds or fails for good; then it is recorded, in the store and the ledger,
    as failed with :data:`STILL_IN_EFFECT` in its error, so no compensating action is left
    ``started`` and what is still in effect is named.

    Returns:
        The results of the inverse actions (executed, already done, or failed).
    """
    if result.status != ActionStatus.EXECUTED:
        return []
    logger = get_run_logger()
    plan = result.plan
    undone: list[ActionResult] = []
    try:
        effects = await Ledger(store).in_effect(incident_id)
    except Exception as exc:  # a rollback hook that raises would abort the other rollbacks
        logger.error("Could not read what %s left in effect: %s", incident_id, exc)
        return []
    for effect in effects:
        entry = effect.entry
        if (entry.capability, entry.verb, entry.target) != (
            plan.capability.value,
            plan.verb,
            plan.target,
        ):
            continue
        outcome = await _undo(effect.inverse_plan(), store=store, integrations=integrations)
        undone.append(outcome)
        if outcome.status == ActionStatus.FAILED:
            logger.error(
                "%s %s is %s: %s; `stanch undo %s` lists it",
                plan.action,
                plan.target_label,
                STILL_IN_EFFECT,
                outcome.error,
                incident_id,
            )
        else:
            logger.warning("Rolled back %s: %s", plan.action, outcome.status)
    return undone


async def _undo(
    inverse: ActionPlan, *, store: Store, integrations: wiring.Integrations
) -> ActionResult:
    """Run one compensating action, retrying transient faults; record it however it ends."""
    adapter = integrations.adapter(inverse.capability)
    started = utcnow()
    error: Exception | None = None
    for attempt in range(ROLLBACK_ATTEMPTS):
        try:
            done: ActionResult = await execute_action.fn(
                inverse,
                inverse.sha256,
                adapter,
                store,
                verdict=Verdict.UNATTENDED,
                approved_by=[ROLLBACK_AUTHORITY],
            )
            return done
        except TransientError as exc:
            error = exc
            if attempt + 1 < ROLLBACK_ATTEMPTS:
                await asyncio.sleep(_wait(exc, attempt))
        except Exception as exc:  # permanent: retrying cannot help
            error = exc
            break
    return await _given_up(inverse, store, adapter.vendor, error, started)


def _wait(error: TransientError, attempt: int) -> float:
    backoff = ROLLBACK_BACKOFF_SECONDS[min(attempt, len(ROLLBACK_BACKOFF_SECONDS) - 1)]
    if isinstance(error, RateLimited) and error.retry_after:
        return max(backoff, min(error.retry_after, _MAX_RETRY_AFTER))
    return backoff


async def _given_up(
    inverse: ActionPlan, store: Store, vendor: str, error: Exception | None, started: datetime
) -> ActionResult:
    """Record a compensating action that could not be done: failed, and what it leaves."""
    failed = failed_result(
        inverse,
        verdict=Verdict.UNATTENDED,
        approved_by=[ROLLBACK_AUTHORITY],
        vendor=getattr(error, "vendor", None) or vendor,
        error=f"{STILL_IN_EFFECT}: {type(error).__name__}: {error}",
        started=started,
    )
    try:
        await store.finish_action(failed)
        await Ledger(store).append_action(failed)
    except Exception as exc:  # the store itself is failing: say so, never raise
        get_run_logger().error("Could not record the failed rollback of %s: %s", inverse, exc)
    return failed
