"""The lifecycle's Prefect tasks: one per vendor call or side effect.

Retries are for transient vendor faults only (:func:`retry_on_transient` looks at the
error type), with exponential backoff and jitter. A 429 is different: the task itself
waits what the vendor asked (plus a little jitter) and calls again, so Prefect's backoff
is not added on top. Executed actions are claimed in the store under their idempotency
key first, so a retried task or a re-run flow does not fire the same action twice; and a
request that may change vendor state is noted before it leaves, so a state found in place
after an answer was lost is recorded as this incident's own action, not ``already_done``.

Task runs carry no tags: Prefect takes a concurrency lease for every tag of every task
run, one more request per task, which on the embedded SQLite server often fails and
costs a 2 s client back-off. The stage and vendor are in the task-run name instead
(``[contain] edr.contain_host WS-0042 · crowdstrike``; :func:`in_stage`); a per-vendor
limit is opt-in (:func:`vendor_slot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.asyncio import concurrency
from prefect.tasks import exponential_backoff
from prefect.transactions import get_transaction

from flows.errors import PlanMismatch
from flows.models import (
    ACTION_VERBS,
    ActionPlan,
    ActionResult,
    ActionStatus,
    Stage,
    Verdict,
    utcnow,
)
from flows.record import Ledger, Store
from flows.settings import load_settings
from integrations.capabilities import (
    EDR,
    ActionReceipt,
    Containment,
    Host,
    IdentityProvider,
    UserAccount,
)
from integrations.errors import IntegrationError, RateLimited, TransientError
from integrations.http import Mutations, watching

RETRIES = 3
MAX_HONOURED_RETRY_AFTER = 60.0
RATE_LIMIT_JITTER = 0.1
"""At most this fraction of a vendor's asked wait is added, so callers do not all return
at the same instant."""

_T = TypeVar("_T")


async def retry_on_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry :class:`TransientError` (timeouts, 5xx) only.

    A :class:`RateLimited` reaching Prefect has already been waited out and called again
    :data:`RETRIES` times inside the task (:func:`honouring_rate_limits`); Prefect's own
    backoff on top would make every 429 cost twice what the vendor asked.
    """
    error = await state.aresult(raise_on_failure=False)
    return isinstance(error, TransientError) and not isinstance(error, RateLimited)


RETRYING: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    # Idempotency is the store's job (unique key per incident, action and target);
    # Prefect's cache would also try to hash adapter and store arguments.
    "cache_policy": NO_CACHE,
}


def rate_limit_wait(error: RateLimited, attempt: int) -> float:
    """Seconds to wait after ``error``: what the vendor asked, capped, plus small jitter.

    A vendor that says nothing (SentinelOne and PAN-OS document no header, Graph's
    Identity Protection sends none) gets exponential backoff instead.
    """
    asked = error.retry_after if error.retry_after is not None else float(2**attempt)
    wait = min(asked, MAX_HONOURED_RETRY_AFTER)
    return wait + random.uniform(0.0, RATE_LIMIT_JITTER * wait)  # noqa: S311 - not crypto


async def honouring_rate_limits(call: Callable[[], Awaitable[_T]]) -> _T:
    """``await call()``; after a 429, wait what the vendor asked and call again.

    Only 429s are retried here (a throttled request was not carried out, so repeating it
    is safe); after :data:`RETRIES` of them the last one is raised.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except RateLimited as error:
            if attempt >= RETRIES:
                raise
            await asyncio.sleep(rate_limit_wait(error, attempt))
            attempt += 1


_STAGE: ContextVar[Stage | None] = ContextVar("stanch_stage", default=None)


@contextlib.contextmanager
def in_stage(stage: Stage) -> Iterator[None]:
    """Name the task runs started inside the block after ``stage`` (``[contain] …``).

    The run graph of the Prefect UI shows each task run by name, so this is how a reader
    sees which stage a vendor call belongs to; it costs nothing per task run, where a
    tag costs a concurrency lease and a subflow per stage a flow run.
    """
    token = _STAGE.set(stage)
    try:
        yield
    finally:
        _STAGE.reset(token)


def staged_name(describe: Callable[[dict[str, Any]], str]) -> Callable[..., str]:
    """A ``task_run_name`` callable: ``[<stage>] <describe(parameters)>``.

    Outside :func:`in_stage` (the sweep, an undo) the name is ``describe``'s alone.
    """

    def name(parameters: dict[str, Any]) -> str:
        stage = _STAGE.get()
        text = describe(parameters)
        return f"[{stage.value}] {text}" if stage is not None else text

    return name


def _vendor_of(adapter: Any) -> str:
    return str(getattr(adapter, "vendor", "") or "?")


def _action_name(parameters: dict[str, Any]) -> str:
    plan: ActionPlan = parameters["plan"]
    return f"{plan.action} {plan.target_label} · {_vendor_of(parameters['adapter'])}"


@contextlib.asynccontextmanager
async def vendor_slot(vendor: str) -> AsyncIterator[None]:
    """Hold a slot of the Prefect global concurrency limit ``vendor:<vendor>`` if asked to.

    Off by default: only vendors named in ``STANCH_VENDOR_CONCURRENCY`` take a slot (one
    request to the Prefect server per call), for an API quota shared by several flow
    runs. The limit must exist (``prefect gcl create vendor:crowdstrike --limit 5``); a
    missing one fails the call with Prefect's ``ConcurrencySlotAcquisitionError`` naming
    it, rather than silently not limiting.
    """
    if vendor not in load_settings().vendor_concurrency:
        yield
        return
    async with concurrency(f"vendor:{vendor}", occupy=1, strict=True):
        yield


@task(
    name="edr.find_host",
    task_run_name=staged_name(lambda p: f"edr.find_host {p['hostname']} · {_vendor_of(p['edr'])}"),
    **RETRYING,
)
async def find_host(edr: EDR, hostname: str) -> Host | None:
    """Look a host up by name in the EDR (investigate stage)."""
    async with vendor_slot(_vendor_of(edr)):
        return await honouring_rate_limits(lambda: edr.find_host(hostname))


@task(
    name="identity.find_user",
    task_run_name=staged_name(
        lambda p: f"identity.find_user {p['login']} · {_vendor_of(p['identity'])}"
    ),
    **RETRYING,
)
async def find_user(identity: IdentityProvider, login: str) -> UserAccount | None:
    """Look a user up by login in the identity provider (investigate stage)."""
    async with vendor_slot(_vendor_of(identity)):
        return await honouring_rate_limits(lambda: identity.find_user(login))


def _lookup_name(parameters: dict[str, Any]) -> str:
    # "identity.find_user apatel@acme.example", as the YAML investigation steps read.
    subject = next(iter(dict(parameters.get("args") or {}).values()), "")
    return f"{parameters['action']} {subject}".strip()


@task(name="playbook.lookup", task_run_name=staged_name(_lookup_name), **RETRYING)
async def playbook_lookup(
    lookup: Callable[[str, Mapping[str, Any]], Awaitable[Any]], action: str, args: Mapping[str, Any]
) -> Any:
    """One read-only lookup a Python playbook made (investigate or a later stage)."""
    return await honouring_rate_limits(lambda: lookup(action, args))


@task(
    name="playbook.stage",
    task_run_name=staged_name(lambda p: str(p["name"])),
    cache_policy=NO_CACHE,
)
async def playbook_stage(name: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """One stage function of a Python playbook (``phishing-click.contain``), planning only."""
    return await call()


def failed_result(
    plan: ActionPlan,
    *,
    verdict: Verdict,
    approved_by: list[str],
    vendor: str | None,
    error: str,
    started: datetime,
) -> ActionResult:
    """The result of an authorised plan that could not be carried out."""
    return ActionResult(
        plan=plan,
        plan_sha256=plan.sha256,
        verdict=verdict,
        status=ActionStatus.FAILED,
        approved_by=approved_by,
        vendor=vendor,
        error=error,
        started_at=started,
        finished_at=utcnow(),
    )


async def record_failure(
    store: Store,
    plan: ActionPlan,
    *,
    verdict: Verdict,
    approved_by: list[str],
    error: IntegrationError,
    started: datetime,
) -> ActionResult:
    """Record (store and ledger) a plan the vendor refused or never answered, as failed."""
    failed = failed_result(
        plan,
        verdict=verdict,
        approved_by=approved_by,
        vendor=error.vendor,
        error=str(error),
        started=started,
    )
    await store.finish_action(failed)
    await Ledger(store).append_action(failed)
    return failed


@task(name="execute-action", task_run_name=staged_name(_action_name), **RETRYING)
async def execute_action(
    plan: ActionPlan,
    approved_sha256: str,
    adapter: Any,
    store: Store,
    *,
    verdict: Verdict,
    approved_by: list[str],
) -> ActionResult:
    """Run one authorised plan against its adapter, exactly once per idempotency key.

    Raises:
        PlanMismatch: ``plan`` is not the plan that was approved.
        IntegrationError: the vendor call failed (transient ones are retried by Prefect).
    """
    if plan.sha256 != approved_sha256:
        raise PlanMismatch(
            f"{plan.action} {plan.target_label}: plan hash {plan.sha256[:12]} "
            f"is not the approved {approved_sha256[:12]}"
        )
    ledger = Ledger(store)
    claim = await store.claim(plan)
    if claim.done is not None:
        # Idempotent per key: restores the entry if a crash fell between store and ledger.
        await ledger.append_action(claim.done)
        return claim.done
    started = utcnow()
    noted = False

    async def note_request_sent() -> None:
        nonlocal noted
        if not noted:
            noted = True
            await store.note_request_sent(plan)

    mutations = Mutations(note_request_sent)

    async def attempt() -> tuple[ActionReceipt, bool]:
        # Whether a request of an earlier call in this attempt may have acted (one whose
        # follow-up read was throttled, say), as seen before this call sends anything.
        acted_before = mutations.maybe_applied
        return await _call(plan, adapter), acted_before

    try:
        with watching(mutations):
            async with vendor_slot(_vendor_of(adapter)):
                receipt, acted_before = await honouring_rate_limits(attempt)
    except IntegrationError as error:
        if not isinstance(error, TransientError):
            await _forget_refused_request(store, plan, claim.request_sent, mutations)
            await record_failure(
                store, plan, verdict=verdict, approved_by=approved_by, error=error, started=started
            )
        raise
    if not receipt.changed and (claim.request_sent or acted_before):
        # An earlier attempt's request left and its answer was lost (a timeout, a 5xx
        # after the vendor acted): the state found now may be that request's doing.
        # Disowning it would leave it out of "in effect" and out of `stanch undo`.
        receipt = receipt.model_copy(
            update={
                "changed": True,
                "detail": {**receipt.detail, "acknowledgement": "lost; state confirmed after"},
            }
        )
    result = ActionResult(
        plan=plan,
        plan_sha256=plan.sha256,
        verdict=verdict,
        status=ActionStatus.EXECUTED if receipt.changed else ActionStatus.ALREADY_DONE,
        approved_by=approved_by,
        vendor=receipt.vendor,
        receipt=receipt,
        started_at=started,
        finished_at=utcnow(),
    )
    await store.finish_action(result)
    await ledger.append_action(result)
    return result


async def _forget_refused_request(
    store: Store, plan: ActionPlan, earlier: bool, mutations: Mutations
) -> None:
    # Every state-changing request of this attempt was refused outright (a 4xx): the vendor
    # did not act, so a later attempt finding the state in place did not find ours.
    if not earlier and not mutations.maybe_applied:
        await store.note_request_sent(plan, sent=False)


@task(name="contain-action", task_run_name=staged_name(_action_name), cache_policy=NO_CACHE)
async def contain_action(
    plan: ActionPlan,
    approved_sha256: str,
    adapter: Any,
    store: Store,
    *,
    verdict: Verdict,
    approved_by: list[str],
) -> ActionResult:
    """:func:`execute_action` for a step of a containment transaction.

    Inside a Prefect transaction a task's failed attempt rolls the whole transaction back
    at once, even if a retry then succeeds. So this task has no
    Prefect retries and never fails: transient faults are retried here, with the same
    backoff, and a step that still fails comes back as a ``failed`` result (recorded in
    the store and ledger) for the stage to decide on. The result is also left in the
    step's transaction, where the stage's rollback hook reads it.
    """
    started = utcnow()
    attempt = 0
    while True:
        try:
            result = await execute_action.fn(
                plan, approved_sha256, adapter, store, verdict=verdict, approved_by=approved_by
            )
        except TransientError as error:
            # execute_action already waited out (and retried) a 429's own delay.
            if attempt < RETRIES and not isinstance(error, RateLimited):
                await asyncio.sleep(2**attempt)
                attempt += 1
                continue
            result = await record_failure(
                store, plan, verdict=verdict, approved_by=approved_by, error=error, started=started
            )
        except Exception as error:  # recorded by execute_action when it was the vendor's
            result = failed_result(
                plan,
                verdict=verdict,
                approved_by=approved_by,
                vendor=getattr(error, "vendor", None) or getattr(adapter, "vendor", None),
                error=f"{type(error).__name__}: {error}",
                started=started,
            )
        break
    transaction = get_transaction()
    if transaction is not None:
        transaction.set("result", result)
    return result


async def _call(plan: ActionPlan, adapter: Any) -> ActionReceipt:
    allowed = ACTION_VERBS.get(plan.capability, {})
    if plan.verb not in allowed:
        raise PlanMismatch(f"{plan.action} is not an action stanch can execute")
    unexpected = set(plan.parameters) - set(allowed[plan.verb])
    if unexpected:
        raise PlanMismatch(f"{plan.action} takes no parameter {sorted(unexpected)}")
    method = getattr(adapter, plan.verb)
    receipt: ActionReceipt = await method(plan.target, **plan.parameters)
    settled = _SETTLED_STATE.get(plan.verb)
    if settled is not None and receipt.state != settled:
        receipt = await _await_containment(adapter, plan.target, receipt, settled)
    return receipt


# A host's network containment changes asynchronously in every EDR: the verb is done
# only when the host reports this state.
_SETTLED_STATE = {"contain_host": Containment.CONTAINED, "release_host": Containment.NORMAL}


async def _await_containment(
    edr: EDR,
    host_id: str,
    receipt: ActionReceipt,
    settled: Containment,
    *,
    within: float = 60.0,
) -> ActionReceipt:
    # EDRs answer "pending" and contain asynchronously; containment is only done when the
    # host reports it, so poll within the same task rather than claim success early. The
    # vendor has accepted the action by now: a poll that fails transiently is polled
    # again, never answered by sending the action a second time.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.25
    attempt = 0
    while loop.time() < deadline:
        try:
            host = await edr.get_host(host_id)
        except RateLimited as error:
            left = max(0.0, deadline - loop.time())
            await asyncio.sleep(min(rate_limit_wait(error, attempt), left))
            attempt += 1
            continue
        except TransientError:
            host = None
        if host is not None and host.containment == settled:
            return receipt.model_copy(update={"state": settled.value})
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    return receipt
