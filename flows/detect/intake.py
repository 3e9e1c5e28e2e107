"""Alert intake: normalise, fingerprint, de-duplicate and correlate alerts into incidents.

One :meth:`Intake.ingest` call is one transaction however many alerts the batch holds,
under the tenant's correlation lock (:func:`flows.record.tenant_transaction`): the
incidents the batch's entities match are read from the store inside it, so any number of
intakes on one store (replicas, webhook and pollers) put one attack in one incident.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import reprlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.detect.entities import EntityKind, entity_keys, fingerprint
from flows.detect.guard import Rejected, check_payload
from flows.detect.normalise import _normaliser, normalise
from flows.detect.triage import TriagePolicy
from flows.errors import AlertRejected, CaseError
from flows.models import CaseStatus, Incident, utcnow
from flows.record import (
    CORRELATION_ACTOR,
    START_LEASE,
    AlertRow,
    CaseBook,
    CursorRow,
    DeadLetterRow,
    IncidentEntityRow,
    IncidentRow,
    IncidentTriageRow,
    LinkKind,
    Store,
    claim_pending,
    enqueue_starts,
    mark_failed,
    mark_started,
    matching_incidents,
    tenant_transaction,
)
from integrations.ocsf import DetectionFinding, ObservableType, SeverityId

log = logging.getLogger(__name__)

TENANT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_TENANT = re.compile(TENANT_PATTERN)


# Results ----------------------------------------------------------------------------------
class ItemResult(BaseModel):
    """What happened to one payload of a batch (``index`` is its position in it)."""

    model_config = ConfigDict(frozen=True)

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    fingerprint: str | None = None
    incident_id: str | None = None
    field: str | None = None
    reason: str | None = None


class IngestResult(BaseModel):
    """The outcome of one :meth:`Intake.ingest` call.

    Attributes:
        accepted: alerts stored for the first time.
        duplicates: alerts already stored (or repeated within the batch).
        rejected: payloads that failed normalisation, each kept as a dead letter.
        new_incidents: incidents this batch created.
        joined: accepted alerts that joined an incident that existed before the batch.
        to_start: incidents whose flow should start (new ones, or older ones whose score
            reached the threshold with this batch), each handed once to ``start_incident``.
        recorded_only: ids of new incidents scoring below the threshold.
        started: ids for which ``start_incident`` returned without error.
        items: one result per payload, in batch order.
        merged: incidents this batch's bridging alerts merged, as ``{merged: survivor}``.
        related: new incidents linked to a closed one they share entities with, as
            ``{new: closed}``.
    """

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    new_incidents: int = 0
    joined: int = 0
    to_start: list[Incident] = Field(default_factory=list)
    recorded_only: list[str] = Field(default_factory=list)
    started: list[str] = Field(default_factory=list)
    items: list[ItemResult] = Field(default_factory=list)
    merged: dict[str, str] = Field(default_factory=dict)
    related: dict[str, str] = Field(default_factory=dict)


StartIncident = Callable[[Incident], Awaitable[None]]
"""Starts the lifecycle of one incident (in the service: creates its flow run)."""


# Intake -----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Candidate:
    index: int
    finding: DetectionFinding
    fingerprint: str
    payload: dict[str, Any]
    keys: list[tuple[EntityKind, str]]


@dataclass(slots=True)
class _Open:
    """An incident that is not closed, as correlation sees it during one batch."""

    id: str
    tenant: str
    severity: int
    alert_count: int
    started: bool
    created_ms: int = 0
    hosts: set[str] = field(default_factory=set)
    # (kind, value) -> [first_seen_ms, last_seen_ms]
    seen: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    starting: bool = False


@dataclass(slots=True)
class _Batch:
    """What one batch changes, collected while correlating and written at the end."""

    new: dict[str, list[DetectionFinding]] = field(default_factory=dict)
    joined: dict[str, list[DetectionFinding]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    entities: set[tuple[str, str, str]] = field(default_factory=set)
    placed: dict[str, str] = field(default_factory=dict)  # fingerprint -> incident id
    merged: dict[str, str] = field(default_factory=dict)  # younger -> survivor
    related: dict[str, str] = field(default_factory=dict)  # new -> closed it shares with
    closed: dict[str, _Open] = field(default_factory=dict)  # closed incidents matched


def _candidate(index: int, source: str, payload: Any, *, checked: bool) -> _Candidate:
    """One payload normalised, fingerprinted and keyed, or :class:`AlertRejected`."""
    if isinstance(payload, Rejected):
        raise AlertRejected(payload.field, payload.reason, source=source)
    if not checked and (problem := check_payload(payload)) is not None:
        raise AlertRejected(problem[0], problem[1], source=source)
    finding = normalise(source, payload)
    try:
        keys = entity_keys(finding)
        candidate = _Candidate(index, finding, fingerprint(source, finding), payload, keys)
        # The incident this alert may open is built from it: fail here, alone, if it can't be.
        Incident(id="INC-00000000-0000", tenant="t", title=_title([finding]), alerts=[finding])
    except (ValueError, TypeError, ArithmeticError, LookupError) as exc:
        field = exc.errors()[0]["loc"] if isinstance(exc, ValidationError) else ()
        where = ".".join(str(p) for p in field if p != "alerts" and not isinstance(p, int))
        raise AlertRejected(where or "(alert)", f"{type(exc).__name__}: {exc}"[:500]) from exc
    return candidate


def _dead_letter(
    where: str, exc: AlertRejected, payload: Any, received: datetime
) -> dict[str, Any]:
    if isinstance(payload, Rejected):
        raw: bytes | None = payload.raw
        text = payload.raw.decode("utf-8")
    else:
        raw = None
        try:
            # ASCII escapes: lone surrogates and NULs as text no column refuses.
            text = json.dumps(payload, default=str)
        except (ValueError, TypeError, RecursionError):
            text = reprlib.repr(payload)  # depth-limited: a payload too deep for JSON
    return {
        "source": where,
        "field": exc.field[:300],
        "reason": exc.reason,
        "payload": text,
        "raw": raw,
        "received_at": received,
    }


class _Raced(Exception):
    """Another writer stored one of this batch's alerts between our read and our insert."""


_CHUNK = 500  # bound parameters per IN (...) list, well under every backend's limit


def _severity_rank(severity: int) -> int:
    return SeverityId.UNKNOWN if severity == SeverityId.OTHER else severity


def _title(alerts: Sequence[DetectionFinding]) -> str:
    top = max(alerts, key=lambda a: _severity_rank(a.severity_id))
    hosts = [h for a in alerts for h in a.observed(ObservableType.HOSTNAME)]
    title = top.title.strip() or top.uid
    if hosts and hosts[0].lower() not in title.lower():
        title = f"{title[:150]} on {hosts[0]}"
    return title[:200]


class Intake:
    """Turns batches of vendor alerts into stored alerts and incidents.

    Correlation lives in the store: each batch is one transaction under the tenant's
    lock that reads the incidents its entities match, so any number of ``Intake`` objects
    on one store (replicas, a webhook and pollers) agree. An alert joins an incident that
    is not closed (contained, remediated and awaiting-closure ones included); an alert
    matching two or more merges the younger into the oldest (:meth:`CaseBook.merge`, a
    ledger entry; their executed actions stay where they ran); a new incident sharing
    entities with a closed one is linked to it as ``related``.

    Args:
        store: the incident store.
        start_incident: called once per incident to start, after the batch is committed.
        window: an alert joins an incident of its tenant that is not closed and saw one
            of its entities (host, user, SHA-256, external IP) within this time of it.
        triage: per-tenant triage policy; tenants not named get ``default_policy``.
        default_policy: the policy of tenants without their own.
        refresh_seconds: ignored (kept for callers of the in-memory index it tuned).
    """

    def __init__(
        self,
        store: Store,
        *,
        start_incident: StartIncident,
        window: timedelta = timedelta(hours=1),
        triage: Mapping[str, TriagePolicy] | None = None,
        default_policy: TriagePolicy | None = None,
        refresh_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self._engine = store.engine
        self._start = start_incident
        self.window = window
        self._window_ms = int(window.total_seconds() * 1000)
        self._triage = dict(triage or {})
        self._default_policy = default_policy or TriagePolicy()
        del refresh_seconds
        self._lock = asyncio.Lock()
        self._cases = CaseBook(store)
        # The incidents the current batch matched, read from the store under the lock.
        self._open: dict[str, _Open] = {}
        # (tenant, kind, value) -> incident ids naming it, for the current batch
        self._index: dict[tuple[str, str, str], set[str]] = {}
        self._next_numbers: dict[str, int] = {}
        # Handed to the start callback by this process: a drain must not start them again.
        self._handed: set[str] = set()
        # A callback that confirms a start itself once the run begins (FlowStarter) is
        # given the way to; the others' starts are confirmed when they return.
        self._confirms = bool(getattr(start_incident, "confirms_start", False))
        bind = getattr(start_incident, "bind_confirm", None)
        if callable(bind):
            bind(self._confirm)

    def policy(self, tenant: str) -> TriagePolicy:
        """The triage policy of ``tenant``."""
        return self._triage.get(tenant, self._default_policy)

    async def ready(self) -> bool:
        """Whether the store answers a trivial query."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any failure means "not ready"; the reason goes to the log
            log.exception("store not reachable")
            return False
        return True

    # Ingest -------------------------------------------------------------------------------
    async def ingest(
        self, tenant: str, source: str, payloads: Sequence[Any], *, checked: bool = False
    ) -> IngestResult:
        """Normalise, de-duplicate and correlate one batch of alerts of one tenant.

        Args:
            tenant: the tenant the alerts belong to.
            source: the payload format, ``ocsf`` or a vendor (see :data:`SOURCE_FORMATS`).
            payloads: decoded JSON alerts; a :class:`~flows.detect.guard.Rejected` item
                (refused by the caller, e.g. nested too deep to parse) is dead-lettered
                with its raw text.
            checked: every payload already passed :func:`~flows.detect.guard.check_payload`.

        Raises:
            UnknownSource: ``source`` has no normaliser.
            ConfigurationError: the vendor's normaliser cannot be imported.
            ValueError: ``tenant`` is not a valid tenant id.
        """
        if not _TENANT.match(tenant):
            raise ValueError(f"invalid tenant id {tenant!r}")
        if source != "ocsf":
            _normaliser(source)  # an unknown or broken source fails the call, not each item
        items: list[ItemResult | None] = [None] * len(payloads)
        candidates: list[_Candidate] = []
        dead: list[dict[str, Any]] = []
        received = utcnow()
        for index, payload in enumerate(payloads):
            try:
                candidates.append(_candidate(index, source, payload, checked=checked))
            except AlertRejected as exc:
                items[index] = ItemResult(
                    index=index, status="rejected", field=exc.field, reason=exc.reason
                )
                dead.append(_dead_letter(f"{tenant}/{source}[{index}]", exc, payload, received))

        async with self._lock:
            for attempt in range(3):
                try:
                    result, to_start, batch = await self._write(
                        tenant, source, candidates, dead, received, items
                    )
                    break
                except (IntegrityError, _Raced):
                    # Another tenant's batch took the incident id we read as free (ids
                    # are global, the lock is per tenant): redo the batch.
                    if attempt == 2:
                        raise
            await self._link_and_merge(result, batch)
        to_start = [i for i in to_start if i.id not in result.merged]
        result.to_start = to_start
        if to_start:
            result.started = await self._start_all(to_start)
        return result

    async def _link_and_merge(self, result: IngestResult, batch: _Batch) -> None:
        """Record the batch's merges of bridged incidents and its links to closed ones.

        Each is a case change in the ledger, made after the batch committed (the ledger
        has its own lock; the merge takes the tenant's too, so no alert lands in the
        merged incident meanwhile). Executed actions stay with the incident they ran for.
        """
        for younger, survivor in batch.merged.items():
            try:
                await self._cases.merge(
                    younger, into=survivor, actor=CORRELATION_ACTOR, keep_executed=True
                )
            except CaseError as exc:
                # Closed meanwhile by an analyst: nothing left to merge.
                log.warning("correlation could not merge %s into %s: %s", younger, survivor, exc)
                continue
            result.merged[younger] = survivor
        for new, closed in batch.related.items():
            try:
                await self._cases.link(new, closed, LinkKind.RELATED, actor=CORRELATION_ACTOR)
            except CaseError as exc:
                log.warning("correlation could not link %s to %s: %s", new, closed, exc)
                continue
            result.related[new] = closed

    async def _write(
        self,
        tenant: str,
        source: str,
        candidates: list[_Candidate],
        dead: list[dict[str, Any]],
        received: datetime,
        rejected_items: list[ItemResult | None],
    ) -> tuple[IngestResult, list[Incident], _Batch]:
        items = list(rejected_items)
        result = IngestResult(rejected=len(dead))
        to_start: list[Incident] = []
        batch = _Batch()
        self._open, self._index, self._next_numbers = {}, {}, {}
        async with tenant_transaction(self._engine, tenant) as conn:
            if dead:
                await conn.execute(insert(DeadLetterRow), dead)
            if not candidates:
                result.items = [i for i in items if i is not None]
                return result, to_start, batch

            fresh: list[_Candidate] = []
            batch_seen: set[str] = set()
            existing = await self._existing(conn, tenant, [c.fingerprint for c in candidates])
            for c in candidates:
                if c.fingerprint in existing or c.fingerprint in batch_seen:
                    items[c.index] = ItemResult(
                        index=c.index, status="duplicate", fingerprint=c.fingerprint
                    )
                    continue
                batch_seen.add(c.fingerprint)
                fresh.append(c)
            result.duplicates = len(candidates) - len(fresh)
            if not fresh:
                result.items = [i for i in items if i is not None]
                return result, to_start, batch

            # Oldest first, so that the alert that opened a story opens its incident.
            fresh.sort(key=lambda c: c.finding.time)
            await self._load(conn, tenant, fresh, batch)
            for c in fresh:
                await self._correlate(conn, tenant, c, batch, received)
            result.accepted = len(fresh)
            result.new_incidents = len(batch.new)
            result.joined = sum(len(v) for v in batch.joined.values())

            await self._insert_alerts(conn, tenant, source, fresh, batch, received)
            to_start, result.recorded_only = await self._store_incidents(
                conn, tenant, batch, received
            )
            # In the transaction that acknowledges the alerts: a start decided is never lost.
            await enqueue_starts(conn, to_start, at=received)
            for c in fresh:
                items[c.index] = ItemResult(
                    index=c.index,
                    status="accepted",
                    fingerprint=c.fingerprint,
                    incident_id=batch.placed[c.fingerprint],
                )
        result.items = [i for i in items if i is not None]
        return result, to_start, batch

    async def _load(
        self, conn: AsyncConnection, tenant: str, fresh: list[_Candidate], batch: _Batch
    ) -> None:
        """Read the stored incidents the batch's entities match (under the tenant lock)."""
        keys = {key for c in fresh for key in c.keys}
        if not keys:
            return
        found = await matching_incidents(
            conn,
            tenant,
            keys,
            since_ms=fresh[0].finding.time - self._window_ms,
            until_ms=fresh[-1].finding.time + self._window_ms,
        )
        for candidate in found:
            state = _Open(
                candidate.id,
                tenant,
                candidate.severity,
                candidate.alert_count,
                candidate.started,
                candidate.created_ms,
                seen=candidate.seen,
            )
            state.hosts = {v for k, v in candidate.seen if k == EntityKind.HOST}
            if candidate.status == CaseStatus.CLOSED:
                batch.closed[candidate.id] = state
                continue
            self._open[candidate.id] = state
            for kind, value in candidate.seen:
                self._index.setdefault((tenant, kind, value), set()).add(candidate.id)

    async def _existing(
        self, conn: AsyncConnection, tenant: str, fingerprints: list[str]
    ) -> set[str]:
        found: set[str] = set()
        unique = list(dict.fromkeys(fingerprints))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            rows = await conn.scalars(
                select(AlertRow.fingerprint).where(
                    AlertRow.tenant == tenant, AlertRow.fingerprint.in_(chunk)
                )
            )
            found.update(rows)
        return found

    async def _correlate(
        self,
        conn: AsyncConnection,
        tenant: str,
        c: _Candidate,
        batch: _Batch,
        received: datetime,
    ) -> None:
        at = c.finding.time
        hits = self._hits(tenant, c, self._open, self._index)
        if len(hits) > 1:
            # A bridging alert: the incidents it matches are one attack. The oldest
            # survives; the others are merged into it once the batch is committed.
            incident_id = min(hits, key=lambda i: (self._open[i].created_ms, i))
            for other in sorted(hits):
                if other != incident_id:
                    self._fold(tenant, other, incident_id, batch)
            hits = {incident_id: hits[incident_id]}
        if hits:
            [incident_id] = hits
            incident = self._open[incident_id]
            incident.alert_count += 1
            incident.severity = max(incident.severity, _severity_rank(c.finding.severity_id))
            if incident_id in batch.new:
                batch.new[incident_id].append(c.finding)
            else:
                batch.joined.setdefault(incident_id, []).append(c.finding)
        else:
            incident_id = await self._allocate(conn, received)
            incident = _Open(
                id=incident_id,
                tenant=tenant,
                severity=_severity_rank(c.finding.severity_id),
                alert_count=1,
                started=False,
                created_ms=int(received.timestamp() * 1000),
            )
            self._open[incident_id] = incident
            batch.new[incident_id] = [c.finding]
            # A closed case is not reopened by an alert: the new one points at it.
            closed = self._hits(tenant, c, batch.closed, None)
            if closed:
                batch.related[incident_id] = max(
                    closed, key=lambda i: (max(s[1] for s in batch.closed[i].seen.values()), i)
                )
        batch.touched.add(incident_id)
        batch.placed[c.fingerprint] = incident_id
        for kind, value in c.keys:
            span = incident.seen.get((kind, value))
            if span is None:
                incident.seen[(kind, value)] = [at, at]
                self._index.setdefault((tenant, kind, value), set()).add(incident_id)
                if kind == EntityKind.HOST:
                    incident.hosts.add(value)
            else:
                span[0], span[1] = min(span[0], at), max(span[1], at)
            batch.entities.add((incident_id, kind, value))

    def _hits(
        self,
        tenant: str,
        c: _Candidate,
        states: dict[str, _Open],
        index: dict[tuple[str, str, str], set[str]] | None,
    ) -> dict[str, int]:
        """The incidents of ``states`` that saw one of ``c``'s entities within the window,
        with how many they share."""
        at = c.finding.time
        hits: dict[str, int] = {}
        for key in c.keys:
            ids = index.get((tenant, *key), ()) if index is not None else states
            for incident_id in ids:
                span = states[incident_id].seen.get(key)
                window = self._window_ms
                if span is not None and span[0] - window <= at <= span[1] + window:
                    hits[incident_id] = hits.get(incident_id, 0) + 1
        return hits

    def _fold(self, tenant: str, younger: str, survivor: str, batch: _Batch) -> None:
        """Count ``younger`` as part of ``survivor`` for the rest of the batch."""
        gone = self._open.pop(younger)
        kept = self._open[survivor]
        batch.merged[younger] = survivor
        for merged, into in batch.merged.items():
            if into == younger:
                batch.merged[merged] = survivor
        kept.alert_count += gone.alert_count
        kept.severity = max(kept.severity, gone.severity)
        kept.hosts |= gone.hosts
        for key, (first, last) in gone.seen.items():
            span = kept.seen.setdefault(key, [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
            ids = self._index.setdefault((tenant, *key), set())
            ids.discard(younger)
            ids.add(survivor)
        for fp, placed in batch.placed.items():
            if placed == younger:
                batch.placed[fp] = survivor
        batch.touched.discard(younger)
        if younger in batch.new:
            # Made by this batch: never stored on its own, its alerts open the survivor's.
            alerts = batch.new.pop(younger)
            del batch.merged[younger]
            target = batch.new if survivor in batch.new else batch.joined
            target.setdefault(survivor, []).extend(alerts)
            batch.related.pop(younger, None)
            batch.entities = {(survivor if i == younger else i, k, v) for i, k, v in batch.entities}
        else:
            joined = batch.joined.pop(younger, [])
            if joined:
                target = batch.new if survivor in batch.new else batch.joined
                target.setdefault(survivor, []).extend(joined)
            batch.entities = {(survivor if i == younger else i, k, v) for i, k, v in batch.entities}

    async def _allocate(self, conn: AsyncConnection, when: datetime) -> str:
        """The next ``INC-<yyyymmdd>-<nnnn>``, read from the store once per day and batch."""
        prefix = f"INC-{when:%Y%m%d}-"
        last = self._next_numbers.get(prefix)
        if last is None:
            # Order by length first: INC-...-10000 sorts before INC-...-9999 as text.
            top = await conn.scalar(
                select(IncidentRow.id)
                .where(IncidentRow.id.startswith(prefix))
                .order_by(func.length(IncidentRow.id).desc(), IncidentRow.id.desc())
                .limit(1)
            )
            suffix = top.removeprefix(prefix) if top else "0"
            last = int(suffix) if suffix.isdigit() else 0
        self._next_numbers[prefix] = last + 1
        return f"{prefix}{last + 1:04d}"

    def _insert(self, table: Any) -> Any:
        # Each dialect has its own INSERT ... ON CONFLICT construct with the same methods.
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def _insert_alerts(
        self,
        conn: AsyncConnection,
        tenant: str,
        source: str,
        fresh: list[_Candidate],
        batch: _Batch,
        received: datetime,
    ) -> None:
        table = AlertRow.__table__
        ocsf = source == "ocsf"
        rows = [
            {
                "tenant": tenant,
                "source": source,
                "fingerprint": c.fingerprint,
                "finding_uid": c.finding.uid[:500],
                "severity": int(c.finding.severity_id),
                "occurred_ms": c.finding.time,
                "received_at": received,
                "incident_id": batch.placed[c.fingerprint],
                "entities": [f"{kind}:{value}" for kind, value in c.keys],
                "finding": c.payload
                if ocsf
                else c.finding.model_dump(mode="json", exclude_none=True),
                "raw": None if ocsf else c.payload,
            }
            for c in fresh
        ]
        stored: set[str] = set()
        for start in range(0, len(rows), _CHUNK):
            statement = (
                self._insert(table)
                .on_conflict_do_nothing(index_elements=["tenant", "fingerprint"])
                .returning(table.c.fingerprint)
            )
            stored.update((await conn.execute(statement, rows[start : start + _CHUNK])).scalars())
        if len(stored) != len(rows):
            raise _Raced()

    async def _store_incidents(
        self, conn: AsyncConnection, tenant: str, batch: _Batch, received: datetime
    ) -> tuple[list[Incident], list[str]]:
        policy = self.policy(tenant)
        to_start: list[Incident] = []
        recorded_only: list[str] = []
        incident_rows: list[dict[str, Any]] = []
        for incident_id, alerts in batch.new.items():
            incident = Incident(
                id=incident_id,
                tenant=tenant,
                title=_title(alerts),
                created_at=received,
                alerts=alerts,
            )
            incident_rows.append(
                {
                    "id": incident.id,
                    "tenant": tenant,
                    "title": incident.title,
                    "severity": int(incident.severity),
                    "status": CaseStatus.NEW.value,
                    "created_at": received,
                    "document": incident.model_dump(mode="json"),
                }
            )
            state = self._open[incident_id]
            if self._due(policy, state):
                state.starting = True
                to_start.append(incident)
            else:
                recorded_only.append(incident_id)
        if incident_rows:
            await conn.execute(insert(IncidentRow), incident_rows)

        # An older incident this batch pushed over the threshold (or whose start failed
        # earlier) starts now, with the alerts that tipped it added to its document.
        promoted = [i for i in batch.joined if self._due(policy, self._open[i])]
        if promoted:
            documents = await conn.execute(
                select(IncidentRow.id, IncidentRow.document).where(IncidentRow.id.in_(promoted))
            )
            for incident_id, document in documents:
                stored = Incident.model_validate(document)
                incident = stored.model_copy(
                    update={"alerts": [*stored.alerts, *batch.joined[incident_id]]}
                )
                await conn.execute(
                    update(IncidentRow)
                    .where(IncidentRow.id == incident_id)
                    .values(document=incident.model_dump(mode="json"))
                )
                self._open[incident_id].starting = True
                to_start.append(incident)
        for incident_id in batch.joined:
            severity = self._open[incident_id].severity
            await conn.execute(
                update(IncidentRow)
                .where(IncidentRow.id == incident_id, IncidentRow.severity < severity)
                .values(severity=severity)
            )

        triage = IncidentTriageRow.__table__
        triage_rows = []
        for incident_id in batch.touched:
            state = self._open[incident_id]
            triage_rows.append(
                {
                    "incident_id": incident_id,
                    "tenant": tenant,
                    "score": self._score(policy, state),
                    "severity": state.severity,
                    "alert_count": state.alert_count,
                    # Claimed in the same transaction that decided to start it: another
                    # intake reading this incident next will not start it again.
                    "started": state.started or state.starting,
                    "updated_at": received,
                }
            )
        upsert = self._insert(triage)
        await conn.execute(  # never empty: every accepted alert touches an incident
            upsert.on_conflict_do_update(
                index_elements=["incident_id"],
                set_={
                    "score": upsert.excluded.score,
                    "severity": upsert.excluded.severity,
                    "alert_count": upsert.excluded.alert_count,
                    "started": upsert.excluded.started,
                    "updated_at": upsert.excluded.updated_at,
                },
            ),
            triage_rows,
        )

        entities = IncidentEntityRow.__table__
        entity_rows = []
        for incident_id, kind, value in batch.entities:
            first, last = self._open[incident_id].seen[(kind, value)]
            entity_rows.append(
                {
                    "incident_id": incident_id,
                    "kind": kind,
                    "value": value,
                    "tenant": tenant,
                    "first_seen_ms": first,
                    "last_seen_ms": last,
                }
            )
        if entity_rows:
            # Memory holds the merged span (it is authoritative under the lock), so the
            # upsert just overwrites the stored one.
            upsert = self._insert(entities)
            await conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=["incident_id", "kind", "value"],
                    set_={
                        "first_seen_ms": upsert.excluded.first_seen_ms,
                        "last_seen_ms": upsert.excluded.last_seen_ms,
                    },
                ),
                entity_rows,
            )
        return to_start, recorded_only

    def _score(self, policy: TriagePolicy, state: _Open) -> int:
        return policy.score(
            severity=state.severity, hosts=state.hosts, alert_count=state.alert_count
        )

    def _due(self, policy: TriagePolicy, state: _Open) -> bool:
        return (
            not state.started
            and not state.starting
            and self._score(policy, state) >= policy.threshold
        )

    async def _start_all(self, incidents: list[Incident]) -> list[str]:
        """Call ``start_incident`` for each; mark the ones that succeeded as started."""
        self._handed.update(i.id for i in incidents)
        outcomes = await asyncio.gather(
            *(self._start(incident) for incident in incidents), return_exceptions=True
        )
        started: list[str] = []
        failed: list[str] = []
        for incident, outcome in zip(incidents, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Left unstarted: the next alert that joins it, or the next drain, retries.
                log.error("starting incident %s failed: %r", incident.id, outcome)
                self._handed.discard(incident.id)
                await mark_failed(self._engine, incident.id, repr(outcome))
                failed.append(incident.id)
                continue
            started.append(incident.id)
        if failed:
            # Give back the claim the batch took: the next alert that joins it, or the
            # next drain of the outbox, starts it.
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(IncidentTriageRow)
                    .where(IncidentTriageRow.incident_id.in_(failed))
                    .values(started=False)
                )
        if started and not self._confirms:
            await mark_started(self._engine, started)
        return started

    async def _confirm(self, incident_id: str) -> None:
        await mark_started(self._engine, [incident_id])

    async def drain_starts(self, *, lease: timedelta | None = None) -> list[str]:
        """Start the incidents whose start was decided but whose run was never created.

        The outbox rows a crash left behind (or whose start failed); ``lease=timedelta(0)``
        takes every pending row, as the one intake of a store does when it starts.

        Returns:
            The ids started.
        """
        async with self._lock:
            pending = await claim_pending(
                self._engine, lease=START_LEASE if lease is None else lease
            )
            claimed = [i for i in pending if i.id not in self._handed]
        if not claimed:
            return []
        log.info(
            "starting %d incident(s) left pending: %s",
            len(claimed),
            ", ".join(i.id for i in claimed),
        )
        return await self._start_all(claimed)

    # Poller cursors -----------------------------------------------------------------------
    async def cursor(self, tenant: str, source: str) -> str | None:
        """Where the poller of ``tenant``'s ``source`` stopped, or ``None``."""
        async with self._engine.connect() as conn:
            value: str | None = await conn.scalar(
                select(CursorRow.cursor).where(
                    CursorRow.tenant == tenant, CursorRow.source == source
                )
            )
        return value

    async def save_cursor(self, tenant: str, source: str, cursor: str) -> None:
        """Record where the poller of ``tenant``'s ``source`` stopped."""
        upsert = self._insert(CursorRow.__table__)
        async with self._engine.begin() as conn:
            await conn.execute(
                upsert.values(
                    tenant=tenant, source=source, cursor=cursor, updated_at=utcnow()
                ).on_conflict_do_update(
                    index_elements=["tenant", "source"],
                    set_={
                        "cursor": upsert.excluded.cursor,
                        "updated_at": upsert.excluded.updated_at,
                    },
                )
            )
