"""Alert intake: normalise, fingerprint, de-duplicate and correlate alerts into incidents.

One :meth:`Intake.ingest` call is one transaction however many alerts the batch holds; the
entities of open incidents are kept in memory, so correlating an alert costs no query.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import reprlib
import time
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
from flows.errors import AlertRejected
from flows.models import CaseStatus, Incident, utcnow
from flows.record import (
    CORRELATING_STATUSES,
    START_LEASE,
    AlertRow,
    CursorRow,
    DeadLetterRow,
    IncidentEntityRow,
    IncidentRow,
    IncidentTriageRow,
    Store,
    claim_pending,
    enqueue_starts,
    mark_failed,
    mark_started,
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
    """An open incident as correlation sees it."""

    id: str
    tenant: str
    severity: int
    alert_count: int
    started: bool
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
_LATE_HORIZON_MS = 24 * 3600 * 1000  # how late an alert may arrive and still correlate


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

    Correlation state lives in this object, so one store should have one ``Intake``
    (one service process); batches are serialised by a lock and each is one transaction.

    Args:
        store: the incident store.
        start_incident: called once per incident to start, after the batch is committed.
        window: an alert joins an open incident of its tenant that saw one of its
            entities (host, user, SHA-256, external IP) within this time of the alert.
        triage: per-tenant triage policy; tenants not named get ``default_policy``.
        default_policy: the policy of tenants without their own.
        refresh_seconds: how often to drop incidents closed elsewhere (e.g. resolved by
            the lifecycle) from the in-memory index; ``0`` checks on every batch.
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
        self._refresh_seconds = refresh_seconds
        self._lock = asyncio.Lock()
        self._loaded = False
        self._refreshed = 0.0
        self._open: dict[str, _Open] = {}
        # (tenant, kind, value) -> incident ids naming it
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
                    result, to_start = await self._write(
                        tenant, source, candidates, dead, received, items
                    )
                    break
                except (IntegrityError, _Raced):
                    # Another process wrote an alert or took an incident id between our
                    # read and our write: reload what we know and redo the batch.
                    self._loaded = False
                    if attempt == 2:
                        raise
                except BaseException:
                    self._loaded = False  # memory may hold this batch's rolled-back changes
                    raise
        result.to_start = to_start
        if to_start:
            result.started = await self._start_all(to_start)
        return result

    async def _write(
        self,
        tenant: str,
        source: str,
        candidates: list[_Candidate],
        dead: list[dict[str, Any]],
        received: datetime,
        rejected_items: list[ItemResult | None],
    ) -> tuple[IngestResult, list[Incident]]:
        items = list(rejected_items)
        result = IngestResult(rejected=len(dead))
        to_start: list[Incident] = []
        async with self._engine.begin() as conn:
            if dead:
                await conn.execute(insert(DeadLetterRow), dead)
            if not candidates:
                result.items = [i for i in items if i is not None]
                return result, to_start
            await self._prepare(conn)
            self._next_numbers = {}

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
                return result, to_start

            # Oldest first, so that the alert that opened a story opens its incident.
            fresh.sort(key=lambda c: c.finding.time)
            batch = _Batch()
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
        return result, to_start

    async def _prepare(self, conn: AsyncConnection) -> None:
        now = time.monotonic()
        if not self._loaded:
            await self._load(conn)
            self._loaded, self._refreshed = True, now
        elif now - self._refreshed >= self._refresh_seconds:
            await self._refresh(conn)
            self._refreshed = now

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
        hits: dict[str, int] = {}
        for kind, value in c.keys:
            for incident_id in self._index.get((tenant, kind, value), ()):
                first, last = self._open[incident_id].seen[(kind, value)]
                if first - self._window_ms <= at <= last + self._window_ms:
                    hits[incident_id] = hits.get(incident_id, 0) + 1
        if hits:
            # Most shared entities wins; then the most recently active; then the oldest id.
            incident_id = max(
                sorted(hits),
                key=lambda i: (hits[i], max(s[1] for s in self._open[i].seen.values())),
            )
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
            )
            self._open[incident_id] = incident
            batch.new[incident_id] = [c.finding]
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
                    "started": state.started,
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
        for incident, outcome in zip(incidents, outcomes, strict=True):
            state = self._open.get(incident.id)
            if state is not None:
                state.starting = False
            if isinstance(outcome, BaseException):
                # Left unstarted: the next alert that joins it, or the next drain, retries.
                log.error("starting incident %s failed: %r", incident.id, outcome)
                self._handed.discard(incident.id)
                await mark_failed(self._engine, incident.id, repr(outcome))
                continue
            started.append(incident.id)
            if state is not None:
                state.started = True
        if started:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(IncidentTriageRow)
                    .where(IncidentTriageRow.incident_id.in_(started))
                    .values(started=True)
                )
            if not self._confirms:
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

    # In-memory index ----------------------------------------------------------------------
    async def _load(self, conn: AsyncConnection) -> None:
        """Read the entities of open incidents that can still take an alert."""
        self._open.clear()
        self._index.clear()
        cutoff = int(time.time() * 1000) - self._window_ms - _LATE_HORIZON_MS
        states = await conn.execute(
            select(
                IncidentTriageRow.incident_id,
                IncidentTriageRow.tenant,
                IncidentTriageRow.severity,
                IncidentTriageRow.alert_count,
                IncidentTriageRow.started,
            )
            .join(IncidentRow, IncidentRow.id == IncidentTriageRow.incident_id)
            .where(IncidentRow.status.in_(CORRELATING_STATUSES))
        )
        for incident_id, tenant, severity, alert_count, started in states:
            self._open[incident_id] = _Open(incident_id, tenant, severity, alert_count, started)
        rows = await conn.execute(
            select(
                IncidentEntityRow.incident_id,
                IncidentEntityRow.kind,
                IncidentEntityRow.value,
                IncidentEntityRow.first_seen_ms,
                IncidentEntityRow.last_seen_ms,
            )
            .join(IncidentRow, IncidentRow.id == IncidentEntityRow.incident_id)
            .where(
                IncidentRow.status.in_(CORRELATING_STATUSES),
                IncidentEntityRow.last_seen_ms >= cutoff,
            )
        )
        for incident_id, kind, value, first, last in rows:
            state = self._open.get(incident_id)
            if state is None:
                continue
            state.seen[(kind, value)] = [first, last]
            if kind == EntityKind.HOST:
                state.hosts.add(value)
            self._index.setdefault((state.tenant, kind, value), set()).add(incident_id)
        # Hosts drive the triage score even when too old to correlate on.
        for incident_id, value in await conn.execute(
            select(IncidentEntityRow.incident_id, IncidentEntityRow.value).where(
                IncidentEntityRow.kind == EntityKind.HOST,
                IncidentEntityRow.last_seen_ms < cutoff,
            )
        ):
            if (state := self._open.get(incident_id)) is not None:
                state.hosts.add(value)

    async def _refresh(self, conn: AsyncConnection) -> None:
        """Forget incidents closed since (resolved by the lifecycle or an analyst)."""
        ids = list(self._open)
        for start in range(0, len(ids), _CHUNK):
            closed = await conn.scalars(
                select(IncidentRow.id).where(
                    IncidentRow.id.in_(ids[start : start + _CHUNK]),
                    IncidentRow.status.not_in(CORRELATING_STATUSES),
                )
            )
            for incident_id in closed:
                self.forget(incident_id)

    def forget(self, incident_id: str) -> None:
        """Stop correlating alerts into ``incident_id`` (it was closed)."""
        state = self._open.pop(incident_id, None)
        if state is None:
            return
        for kind, value in state.seen:
            ids = self._index.get((state.tenant, kind, value))
            if ids is not None:
                ids.discard(incident_id)
                if not ids:
                    del self._index[(state.tenant, kind, value)]

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
