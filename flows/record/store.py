"""The incident store: incidents, executed actions, approval requests, stage transitions.

SQLAlchemy 2 async; SQLite (WAL) under the stanch home by default, PostgreSQL by URL.
The ``actions`` table's unique idempotency key (incident, action, target) is what keeps a
retried task or a re-run flow from firing the same vendor action twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from flows.models import (
    ActionPlan,
    ActionResult,
    ActionStatus,
    HuntSummary,
    Incident,
    Stage,
    utcnow,
)
from flows.record.migrations import upgrade
from flows.record.tables import (
    PLAYBOOK_ID_MAX,
    ActionRow,
    ApprovalAttemptRow,
    ApprovalRow,
    ApprovalVoteRow,
    BudgetClaimRow,
    DeadLetterRow,
    IncidentHuntRow,
    IncidentRow,
    IncidentSummaryRow,
    SlackApprovalRow,
    StageEventRow,
)

_DONE = (ActionStatus.EXECUTED.value, ActionStatus.ALREADY_DONE.value)


@dataclass(frozen=True)
class Claim:
    """What :meth:`Store.claim` found for an action about to run.

    Attributes:
        done: the stored result when the action already ran, else ``None``.
        request_sent: an earlier attempt sent a request that may have changed vendor state.
    """

    done: ActionResult | None
    request_sent: bool


class Store:
    """Async access to the incident store. Open it with :func:`open_store`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)

    # Incidents ------------------------------------------------------------------------
    async def allocate_incident_id(self, when: datetime) -> str:
        """The next free ``INC-<yyyymmdd>-<nnnn>`` id for that day."""
        prefix = f"INC-{when:%Y%m%d}-"
        async with self._session() as session:
            ids = (
                await session.scalars(
                    select(IncidentRow.id).where(IncidentRow.id.startswith(prefix))
                )
            ).all()
        numbers = [int(i.removeprefix(prefix)) for i in ids if i.removeprefix(prefix).isdigit()]
        return f"{prefix}{max(numbers, default=0) + 1:04d}"

    async def save_incident(self, incident: Incident, *, flow_run_id: str | None = None) -> None:
        """Insert or update an incident."""
        async with self._session.begin() as session:
            row = await session.get(IncidentRow, incident.id)
            if row is None:
                row = IncidentRow(id=incident.id, created_at=incident.created_at)
                session.add(row)
            row.tenant = incident.tenant
            row.title = incident.title
            row.severity = int(incident.severity)
            row.document = incident.model_dump(mode="json")
            if flow_run_id is not None:
                row.flow_run_id = flow_run_id

    async def set_incident_playbook(self, incident_id: str, playbook: str | None) -> None:
        """Record which playbook handles an incident (``None``: the built-in response).

        Raises:
            ValueError: ``playbook`` is longer than the column's 80 characters.
            LookupError: no incident ``incident_id`` is stored.
        """
        if playbook is not None and len(playbook) > PLAYBOOK_ID_MAX:
            raise ValueError(
                f"playbook: {playbook[:20]!r}… is {len(playbook)} characters long, "
                f"the store keeps at most {PLAYBOOK_ID_MAX}"
            )
        async with self._session.begin() as session:
            result = await session.execute(
                update(IncidentRow).where(IncidentRow.id == incident_id).values(playbook=playbook)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise LookupError(f"no incident {incident_id!r} in the store")

    async def propose_disposition(
        self, incident_id: str, disposition: str, *, by: str, reason: str
    ) -> None:
        """Record that an analyst stopped the response and proposes closing the incident.

        Args:
            incident_id: the incident.
            disposition: how it should be closed, ``false_positive``.
            by: who said so (``slack:U…``, ``cli:alice@host``).
            reason: their words.

        Raises:
            LookupError: no incident ``incident_id`` is stored.
        """
        async with self._session.begin() as session:
            result = await session.execute(
                update(IncidentRow)
                .where(IncidentRow.id == incident_id)
                .values(
                    proposed_disposition=disposition,
                    proposed_disposition_by=by[:200],
                    proposed_disposition_reason=reason,
                    proposed_disposition_at=utcnow(),
                )
            )
            if getattr(result, "rowcount", 0) != 1:
                raise LookupError(f"no incident {incident_id!r} in the store")

    async def get_incident(self, incident_id: str) -> IncidentRow | None:
        """The stored incident row, or ``None``."""
        async with self._session() as session:
            return await session.get(IncidentRow, incident_id)

    # Actions --------------------------------------------------------------------------
    async def claim_action(self, plan: ActionPlan) -> ActionResult | None:
        """Record that ``plan`` is about to run; return the earlier result if it already ran.

        Returns:
            ``None`` when the caller should call the vendor now; otherwise the stored
            result of a previous successful execution of the same idempotency key.
        """
        return (await self.claim(plan)).done

    async def claim(self, plan: ActionPlan) -> Claim:
        """Record that ``plan`` is about to run, and what earlier attempts left behind.

        Returns:
            The earlier result if the action already ran (then the caller does nothing),
            and whether an earlier attempt of this incident sent a request that may have
            changed the vendor's state (then state found in place may be its own doing).
        """
        now = utcnow()
        async with self._session.begin() as session:
            row = (
                await session.scalars(
                    select(ActionRow).where(ActionRow.idempotency_key == plan.idempotency_key)
                )
            ).one_or_none()
            if row is not None and row.status in _DONE and row.result is not None:
                return Claim(ActionResult.model_validate(row.result), bool(row.request_sent))
            if row is None:
                session.add(
                    ActionRow(
                        idempotency_key=plan.idempotency_key,
                        incident_id=plan.incident_id,
                        tenant=plan.tenant,
                        action=plan.action,
                        target=plan.target,
                        plan_sha256=plan.sha256,
                        plan=plan.model_dump(mode="json"),
                        status="started",
                        attempts=1,
                        request_sent=False,
                        started_at=now,
                    )
                )
                return Claim(None, False)
            # A crash or failure left it unfinished: the adapters' verbs are idempotent,
            # so calling again is safe; count the attempt for the record.
            row.status = "started"
            row.attempts += 1
            row.started_at = now
            return Claim(None, bool(row.request_sent))

    async def note_request_sent(self, plan: ActionPlan, *, sent: bool = True) -> None:
        """Record that a request that may change the vendor's state left for ``plan``.

        Written before the request goes, so a crash or a lost answer after it is known;
        ``sent=False`` takes it back once every such request was refused outright.
        """
        async with self._session.begin() as session:
            await session.execute(
                update(ActionRow)
                .where(ActionRow.idempotency_key == plan.idempotency_key)
                .values(request_sent=sent)
            )

    async def finish_action(self, result: ActionResult) -> bool:
        """Store the outcome of a claimed (or refused) action.

        Returns ``False``, storing nothing, when the action is already done: an executed
        action stays executed whatever a later run decides about the same plan.
        """
        key = result.plan.idempotency_key
        async with self._session.begin() as session:
            row = (
                await session.scalars(select(ActionRow).where(ActionRow.idempotency_key == key))
            ).one_or_none()
            if row is not None and row.status in _DONE and result.status.value not in _DONE:
                return False
            if row is None:
                row = ActionRow(
                    idempotency_key=key,
                    incident_id=result.plan.incident_id,
                    tenant=result.plan.tenant,
                    action=result.plan.action,
                    target=result.plan.target,
                    plan_sha256=result.plan_sha256,
                    plan=result.plan.model_dump(mode="json"),
                    attempts=0,
                    started_at=result.started_at or utcnow(),
                )
                session.add(row)
            row.status = result.status.value
            row.result = result.model_dump(mode="json")
            row.finished_at = result.finished_at or utcnow()
            return True

    async def actions(self, incident_id: str) -> Sequence[ActionRow]:
        """Every action row of an incident, oldest first."""
        async with self._session() as session:
            return (
                await session.scalars(
                    select(ActionRow)
                    .where(ActionRow.incident_id == incident_id)
                    .order_by(ActionRow.id)
                )
            ).all()

    async def recent_actions(self, tenant: str, since: datetime) -> Sequence[ActionRow]:
        """A tenant's actions started since ``since`` (for blast-radius budgets)."""
        async with self._session() as session:
            return (
                await session.scalars(
                    select(ActionRow).where(
                        ActionRow.tenant == tenant, ActionRow.started_at >= since
                    )
                )
            ).all()

    async def reserve_budget(
        self, plan: ActionPlan, *, max_count: int, window: timedelta
    ) -> tuple[bool, int]:
        """Spend one unit of ``plan``'s tenant budget for its action, if one is left.

        The count and the claim are one transaction under a lock on the tenant's claims
        (SQLite: ``BEGIN IMMEDIATE``, the database's write lock; PostgreSQL: a transaction
        advisory lock per tenant and action), so two incidents racing for the last unit
        cannot both get it. A plan that already holds a claim (a re-run) keeps it.

        Returns:
            Whether the plan may run unattended, and how many units were spent in the
            window before this one.
        """
        now = utcnow()
        async with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await conn.begin()
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                        {"key": f"stanch-budget:{plan.tenant}:{plan.action}"},
                    )
            held = (
                await conn.execute(
                    select(BudgetClaimRow.idempotency_key).where(
                        BudgetClaimRow.idempotency_key == plan.idempotency_key
                    )
                )
            ).first()
            spent = (
                await conn.execute(
                    select(func.count())
                    .select_from(BudgetClaimRow)
                    .where(
                        BudgetClaimRow.tenant == plan.tenant,
                        BudgetClaimRow.action == plan.action,
                        BudgetClaimRow.claimed_at >= now - window,
                        BudgetClaimRow.idempotency_key != plan.idempotency_key,
                    )
                )
            ).scalar_one()
            granted = held is not None or spent < max_count
            if granted and held is None:
                await conn.execute(
                    insert(BudgetClaimRow).values(
                        idempotency_key=plan.idempotency_key,
                        tenant=plan.tenant,
                        action=plan.action,
                        incident_id=plan.incident_id,
                        claimed_at=now,
                    )
                )
            await conn.commit()
        return granted, int(spent)

    async def budget_spent(
        self, tenant: str, action: str, window: timedelta, *, excluding: Iterable[str] = ()
    ) -> int:
        """How many units of ``tenant``'s budget for ``action`` were spent within ``window``,
        not counting the claims of the plan keys in ``excluding``."""
        async with self._session() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(BudgetClaimRow)
                .where(
                    BudgetClaimRow.tenant == tenant,
                    BudgetClaimRow.action == action,
                    BudgetClaimRow.claimed_at >= utcnow() - window,
                    BudgetClaimRow.idempotency_key.not_in(list(excluding)),
                )
            )
        return int(count or 0)

    # Approvals ------------------------------------------------------------------------
    async def record_attempt(
        self, approval_id: str, attempt: int, *, claimed_by: str, channel: str, problem: str
    ) -> bool:
        """Keep an unverifiable decision on a request; ``False`` if that attempt is kept."""
        try:
            async with self._session.begin() as session:
                session.add(
                    ApprovalAttemptRow(
                        approval_id=approval_id,
                        attempt=attempt,
                        claimed_by=claimed_by[:200],
                        channel=channel[:40],
                        problem=problem,
                        at=utcnow(),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def attempts(self, approval_id: str) -> Sequence[ApprovalAttemptRow]:
        """A request's unverifiable decisions, in order."""
        async with self._session() as session:
            return (
                await session.scalars(
                    select(ApprovalAttemptRow)
                    .where(ApprovalAttemptRow.approval_id == approval_id)
                    .order_by(ApprovalAttemptRow.attempt)
                )
            ).all()

    async def create_approval(self, row: ApprovalRow) -> None:
        """Store a new pending approval request."""
        async with self._session.begin() as session:
            session.add(row)

    async def get_approval(self, approval_id: str) -> ApprovalRow | None:
        """One approval request by id."""
        async with self._session() as session:
            return await session.get(ApprovalRow, approval_id)

    async def approvals(
        self, *, incident_id: str | None = None, status: str | None = None
    ) -> Sequence[ApprovalRow]:
        """Approval requests, newest first, optionally filtered."""
        query = select(ApprovalRow).order_by(ApprovalRow.requested_at.desc())
        if incident_id is not None:
            query = query.where(ApprovalRow.incident_id == incident_id)
        if status is not None:
            query = query.where(ApprovalRow.status == status)
        async with self._session() as session:
            return (await session.scalars(query)).all()

    async def rebind_approval(self, approval_id: str, flow_run_id: str | None) -> None:
        """Point a pending approval at the run now waiting on it (a re-run's)."""
        async with self._session.begin() as session:
            await session.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == approval_id, ApprovalRow.status == "pending")
                .values(flow_run_id=flow_run_id)
            )

    async def decide_approval(
        self, approval_id: str, *, status: str, decided_by: str, reason: str
    ) -> bool:
        """Record a final decision; ``False`` if the request was no longer pending."""
        async with self._session.begin() as session:
            row = await session.get(ApprovalRow, approval_id, with_for_update=True)
            if row is None or row.status != "pending":
                return False
            row.status = status
            row.decided_by = decided_by
            row.reason = reason
            row.decided_at = utcnow()
            return True

    async def bind_slack_message(self, row: SlackApprovalRow) -> None:
        """Store where an approval's Slack message is and what it needs."""
        async with self._session.begin() as session:
            session.add(row)

    async def slack_approval(self, approval_id: str) -> SlackApprovalRow | None:
        """The Slack binding of an approval, or ``None``."""
        async with self._session() as session:
            return await session.get(SlackApprovalRow, approval_id)

    async def pending_slack_approvals(self) -> Sequence[tuple[ApprovalRow, SlackApprovalRow]]:
        """Pending approvals with a Slack message and no final outcome claimed yet."""
        query = (
            select(ApprovalRow, SlackApprovalRow)
            .join(SlackApprovalRow, SlackApprovalRow.approval_id == ApprovalRow.id)
            .where(ApprovalRow.status == "pending", SlackApprovalRow.final.is_(None))
            .order_by(ApprovalRow.deadline)
        )
        async with self._session() as session:
            return [(a, b) for a, b in (await session.execute(query)).all()]

    async def add_vote(self, approval_id: str, user_id: str, vote: str, reason: str = "") -> bool:
        """Record a vote; ``False`` if this user already cast this vote (a no-op)."""
        try:
            async with self._session.begin() as session:
                session.add(
                    ApprovalVoteRow(
                        approval_id=approval_id,
                        user_id=user_id,
                        vote=vote,
                        reason=reason,
                        at=utcnow(),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def votes(self, approval_id: str) -> Sequence[ApprovalVoteRow]:
        """An approval's votes, oldest first."""
        async with self._session() as session:
            return (
                await session.scalars(
                    select(ApprovalVoteRow)
                    .where(ApprovalVoteRow.approval_id == approval_id)
                    .order_by(ApprovalVoteRow.id)
                )
            ).all()

    async def claim_final(self, approval_id: str, outcome: str) -> bool:
        """Compare-and-set the final outcome; only one caller (click or sweeper) wins."""
        async with self._session.begin() as session:
            result = await session.execute(
                update(SlackApprovalRow)
                .where(
                    SlackApprovalRow.approval_id == approval_id,
                    SlackApprovalRow.final.is_(None),
                )
                .values(final=outcome)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    async def release_final(self, approval_id: str) -> None:
        """Undo a claim whose resume failed, so the decision can be tried again."""
        async with self._session.begin() as session:
            await session.execute(
                update(SlackApprovalRow)
                .where(SlackApprovalRow.approval_id == approval_id)
                .values(final=None)
            )

    async def touch_slack_approval(
        self,
        approval_id: str,
        *,
        reminded_at: datetime | None = None,
        escalated_at: datetime | None = None,
    ) -> None:
        """Note when a pending approval was last reminded or escalated."""
        values: dict[str, Any] = {}
        if reminded_at is not None:
            values["reminded_at"] = reminded_at
        if escalated_at is not None:
            values["escalated_at"] = escalated_at
        if not values:
            return
        async with self._session.begin() as session:
            await session.execute(
                update(SlackApprovalRow)
                .where(SlackApprovalRow.approval_id == approval_id)
                .values(**values)
            )

    # Hunts ----------------------------------------------------------------------------
    async def save_hunts(self, incident_id: str, hunts: Iterable[HuntSummary]) -> None:
        """Keep (or replace) what the hunts of an incident's indicators found."""
        now = utcnow()
        async with self._session.begin() as session:
            for hunt in hunts:
                row = await session.get(IncidentHuntRow, (incident_id, hunt.kind, hunt.value))
                if row is None:
                    row = IncidentHuntRow(incident_id=incident_id, kind=hunt.kind, value=hunt.value)
                    session.add(row)
                row.vendor, row.host_count = hunt.vendor, hunt.host_count
                row.summary, row.complete = hunt.model_dump(mode="json"), hunt.complete
                row.hunted_at = now

    async def hunts(self, incident_id: str) -> list[HuntSummary]:
        """What the hunts of an incident found, in indicator order."""
        async with self._session() as session:
            rows = await session.scalars(
                select(IncidentHuntRow)
                .where(IncidentHuntRow.incident_id == incident_id)
                .order_by(IncidentHuntRow.kind, IncidentHuntRow.value)
            )
            return [HuntSummary.model_validate(r.summary) for r in rows]

    # Dead letters ---------------------------------------------------------------------
    # Slack summaries ------------------------------------------------------------------
    async def incident_summary(self, incident_id: str) -> IncidentSummaryRow | None:
        """Where the incident's Slack summary was posted, if it was."""
        async with self._session() as session:
            return await session.get(IncidentSummaryRow, incident_id)

    async def record_incident_summary(
        self, incident_id: str, channel: str, ts: str, view: dict[str, Any] | None = None
    ) -> None:
        """Remember (or refresh) where the incident's Slack summary is and what it shows."""
        now = utcnow()
        async with self._session.begin() as session:
            row = await session.get(IncidentSummaryRow, incident_id)
            if row is None:
                session.add(
                    IncidentSummaryRow(
                        incident_id=incident_id,
                        channel=channel,
                        ts=ts,
                        posted_at=now,
                        updated_at=now,
                        view=view,
                    )
                )
            else:
                row.channel, row.ts, row.updated_at = channel, ts, now
                if view is not None:
                    row.view = view

    async def dead_letter(
        self, *, source: str, field: str, reason: str, payload: str, raw: bytes | None = None
    ) -> int:
        """Keep a rejected payload with why it was rejected; returns its id.

        ``raw`` is the bytes as received, when ``payload`` cannot render them exactly.
        """
        async with self._session.begin() as session:
            row = DeadLetterRow(
                source=source[:300],
                field=field[:300],
                reason=reason,
                payload=payload,
                received_at=utcnow(),
                raw=raw,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def dead_letters(self) -> Sequence[DeadLetterRow]:
        """Every rejected payload, oldest first."""
        async with self._session() as session:
            return (await session.scalars(select(DeadLetterRow).order_by(DeadLetterRow.id))).all()

    # Stage transitions ----------------------------------------------------------------
    async def record_stage(self, incident_id: str, stage: Stage, event_name: str) -> datetime:
        """Append a stage transition (``started``, ``completed``, ``failed``, ``skipped``)."""
        at = utcnow()
        async with self._session.begin() as session:
            session.add(
                StageEventRow(incident_id=incident_id, stage=stage, event=event_name, at=at)
            )
        return at

    async def stage_events(self, incident_id: str) -> Sequence[StageEventRow]:
        """The incident's stage transitions in order."""
        async with self._session() as session:
            return (
                await session.scalars(
                    select(StageEventRow)
                    .where(StageEventRow.incident_id == incident_id)
                    .order_by(StageEventRow.id)
                )
            ).all()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The busy timeout makes a concurrent writer wait instead of failing with "database
    # is locked". WAL (which lets the CLI read and decide approvals while a flow writes)
    # is set once per file by _use_wal before the engine connects: it persists in the file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _use_wal(path: str, *, patience: float = 30.0) -> None:
    """Switch the SQLite file at ``path`` to WAL, creating it if need be.

    Switching takes the file's exclusive lock, and SQLite answers "database is locked"
    at once, without waiting out the busy timeout, when another connection holds a lock
    (several processes opening a fresh store together do): so try again until
    ``patience`` seconds have passed. A file already in WAL needs no lock at all.
    """
    deadline = time.monotonic() + patience
    while True:
        connection = sqlite3.connect(path, timeout=patience)
        try:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        finally:
            connection.close()
        time.sleep(0.05)


@asynccontextmanager
async def open_store(
    url: str, *, connect_args: Mapping[str, Any] | None = None
) -> AsyncIterator[Store]:
    """Open the store at ``url``, creating or migrating its schema; dispose of it on exit.

    Args:
        url: a SQLAlchemy async URL (``sqlite+aiosqlite:///…``, ``postgresql+asyncpg://…``).
        connect_args: passed to the driver, e.g. ``{"server_settings": {"search_path":
            "stanch"}}`` to keep the store in its own PostgreSQL schema.

    Raises:
        SchemaError: the store's schema cannot be migrated to this stanch's revision.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(_use_wal, path)
    engine = create_async_engine(url, connect_args=dict(connect_args or {}))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        await upgrade(engine)
        yield Store(engine)
    finally:
        await engine.dispose()
