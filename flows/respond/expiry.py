"""TTL expiry: undo containment whose time-to-live has passed, unless it was renewed.

A block approved "for 24 h" carries ``ttl_seconds``; the approval covers only that long.
When the latest expiry among a target's blocks still in effect in a tenant has passed,
the inverse of each runs through :func:`flows.tasks.execute_action` (idempotent, recorded
in the store and the ledger) with the expiry as its authority.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from prefect import tags
from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import aliased

from flows import wiring
from flows.errors import ConfigurationError
from flows.models import ACTION_VERBS, ActionStatus, Verdict, utcnow
from flows.record import EntryKind, InEffect, Ledger, LedgerEntryRow, Store
from flows.settings import StanchSettings
from flows.tasks import execute_action, record_failure
from integrations.capabilities import INVERSE_VERBS
from integrations.errors import IntegrationError, TransientError

log = logging.getLogger("stanch.expiry")

EXPIRY_AUTHORITY = "policy:ttl-expired"
"""Who authorised an expiry's inverse action: the TTL, not a person."""

TTL_ACTIONS: frozenset[tuple[str, str]] = frozenset(
    (capability.value, verb)
    for capability, verbs in ACTION_VERBS.items()
    for verb, parameters in verbs.items()
    if "ttl_seconds" in parameters
)
"""``(capability, verb)`` of every action that takes a time-to-live (``firewall.block_ip``)."""

_DONE = (ActionStatus.EXECUTED.value, ActionStatus.ALREADY_DONE.value)


class Expiring(BaseModel):
    """A TTL'd action still in effect, and when the effect on its target ends.

    Attributes:
        effect: the ledger entry and its inverse.
        expires_at: the latest expiry among the target's blocks in effect in the tenant
            (a renewal pushes it out); ``None`` while a block without TTL holds the target.
    """

    model_config = ConfigDict(frozen=True)

    effect: InEffect
    expires_at: datetime | None


class Expiry(BaseModel):
    """What undoing one expired action came to.

    Attributes:
        incident_id, tenant: whose action expired.
        action: the inverse that ran, e.g. ``firewall.unblock_ip``.
        target, target_label: the vendor id and what a person recognises.
        expired_at: the expiry that governed (see :attr:`Expiring.expires_at`).
        status: ``executed``, ``already_done`` (the device had lifted it itself) or
            ``failed`` (tried again on the next pass).
        error: why it failed.
    """

    model_config = ConfigDict(frozen=True)

    incident_id: str
    tenant: str
    action: str
    target: str
    target_label: str
    expired_at: datetime
    status: ActionStatus
    error: str | None = None


def _aware(at: datetime) -> datetime:
    # SQLite hands back the UTC it was given without the offset.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _ttl(parameters: dict[str, object]) -> int | None:
    """The positive TTL in seconds, or ``None``: the vendors read ``None`` and 0 as "until
    lifted", and anything unreadable is treated the same (never undo on a guess)."""
    ttl = parameters.get("ttl_seconds")
    if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0:
        return ttl
    return None


async def _open_ttl_entries(store: Store, tenant: str | None) -> dict[str, set[int]]:
    """Executed TTL actions with no inverse recorded after them: incident → entry seqs.

    An inverse that came back ``already_done`` (the device expired the block before the
    sweep) ends the effect too, though :meth:`Ledger.in_effect` still lists it.
    """
    block = aliased(LedgerEntryRow)
    undo = aliased(LedgerEntryRow)
    pairs = [(capability, verb, INVERSE_VERBS[verb]) for capability, verb in TTL_ACTIONS]
    undone = exists().where(
        undo.kind == EntryKind.ACTION.value,
        undo.incident_id == block.incident_id,
        undo.capability == block.capability,
        undo.target == block.target,
        undo.status.in_(_DONE),
        undo.seq > block.seq,
        or_(*(and_(block.verb == verb, undo.verb == inverse) for _, verb, inverse in pairs)),
    )
    query = select(block.incident_id, block.seq).where(
        block.kind == EntryKind.ACTION.value,
        block.status == ActionStatus.EXECUTED.value,
        or_(*(and_(block.capability == c, block.verb == v) for c, v, _ in pairs)),
        ~undone,
    )
    if tenant is not None:
        query = query.where(block.tenant == tenant)
    open_entries: dict[str, set[int]] = defaultdict(set)
    async with store.engine.connect() as conn:
        for incident_id, seq in (await conn.execute(query)).all():
            open_entries[incident_id].add(seq)
    return open_entries


async def expiring(store: Store, *, tenant: str | None = None) -> list[Expiring]:
    """Every TTL'd action still in effect, across incidents, with its target's expiry.

    A later block of the same target in the same tenant (any incident) still in effect is
    a renewal: the target's expiry is the latest of them, or none while one has no TTL.
    Sorted by expiry, and within a target latest block first.
    """
    ledger = Ledger(store)
    effects: list[InEffect] = []
    for incident_id, seqs in (await _open_ttl_entries(store, tenant)).items():
        effects.extend(e for e in await ledger.in_effect(incident_id) if e.entry.seq in seqs)
    ends: dict[tuple[str, str | None, str | None], list[datetime | None]] = defaultdict(list)
    for effect in effects:
        entry, ttl = effect.entry, _ttl(effect.entry.parameters)
        ends[(entry.tenant, entry.capability, entry.target)].append(
            None if ttl is None else _aware(entry.recorded_at) + timedelta(seconds=ttl)
        )
    items: list[Expiring] = []
    for effect in effects:
        entry = effect.entry
        if _ttl(entry.parameters) is None:
            continue
        target_ends = ends[(entry.tenant, entry.capability, entry.target)]
        governing = None if None in target_ends else max(e for e in target_ends if e)
        items.append(Expiring(effect=effect, expires_at=governing))
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(
        items,
        key=lambda x: (x.expires_at or far, x.effect.entry.target or "", -x.effect.entry.seq),
    )


async def expire_due(
    store: Store,
    settings: StanchSettings,
    *,
    now: datetime | None = None,
    tenant: str | None = None,
    lab: wiring.Lab | None = None,
) -> list[Expiry]:
    """Undo every TTL'd action whose target's expiry is at or before ``now``.

    Each inverse runs through :func:`execute_action` with ``approved_by`` set to
    :data:`EXPIRY_AUTHORITY`, one tenant's adapters at a time and latest block first. A
    failure is recorded (store and ledger) and left for the next pass to retry.

    Args:
        store: the incident store whose ledger is read and written.
        settings: vendor choice and credentials (``lab`` or ``live``).
        now: the clock; must be timezone-aware. Default: the current time.
        tenant: only this tenant's actions.
        lab: the simulators in ``lab`` mode (default: the process-wide lab).

    Raises:
        ValueError: ``now`` is naive.
    """
    now = utcnow() if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    due = [x for x in await expiring(store, tenant=tenant) if x.expires_at and x.expires_at <= now]
    by_tenant: dict[str, list[Expiring]] = defaultdict(list)
    for item in due:
        by_tenant[item.effect.entry.tenant].append(item)
    done: list[Expiry] = []
    for name, items in by_tenant.items():
        async with contextlib.AsyncExitStack() as stack:
            try:
                integrations = await stack.enter_async_context(
                    wiring.connect(settings, lab, tenant=name)
                )
            except ConfigurationError as exc:
                # Nothing reached a vendor: reported and logged, retried on the next pass.
                log.error("expiry for tenant %s: %s", name, exc)
                done.extend(_expiry(item, ActionStatus.FAILED, str(exc)) for item in items)
                continue
            # One at a time: the same target may expire in several incidents at once.
            for item in items:
                done.append(await _undo(store, integrations, item))
    return done


async def _undo(store: Store, integrations: wiring.Integrations, item: Expiring) -> Expiry:
    plan = item.effect.inverse_plan()
    adapter = integrations.adapter(plan.capability)
    started = utcnow()
    labels = (f"stage:{plan.stage.value}", f"vendor:{adapter.vendor}", f"tenant:{plan.tenant}")
    try:
        with tags("expiry", *labels):
            result = await execute_action(
                plan,
                plan.sha256,
                adapter,
                store,
                verdict=Verdict.UNATTENDED,
                approved_by=[EXPIRY_AUTHORITY],
            )
    except IntegrationError as exc:
        log.warning("expiry of %s %s failed: %s", plan.action, plan.target_label, exc)
        if isinstance(exc, TransientError):
            # execute_action records only permanent failures (a transient one is retried
            # first); once its retries are spent, this pass's failure is recorded here.
            await record_failure(
                store,
                plan,
                verdict=Verdict.UNATTENDED,
                approved_by=[EXPIRY_AUTHORITY],
                error=exc,
                started=started,
            )
        return _expiry(item, ActionStatus.FAILED, str(exc))
    return _expiry(item, result.status, result.error)


def _expiry(item: Expiring, status: ActionStatus, error: str | None) -> Expiry:
    plan = item.effect.inverse_plan()
    assert item.expires_at is not None  # only due items are undone
    return Expiry(
        incident_id=plan.incident_id,
        tenant=plan.tenant,
        action=plan.action,
        target=plan.target,
        target_label=plan.target_label,
        expired_at=item.expires_at,
        status=status,
        error=error,
    )
