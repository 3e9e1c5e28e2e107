"""The store's tables: incidents, alerts, actions, approvals, the ledger.

Every table is declared on one :class:`Base`, so ``Base.metadata`` is the whole schema
that the migrations (:mod:`flows.record.migrations`) are compared with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


PLAYBOOK_ID_MAX = 80
"""The longest playbook id ``incidents.playbook`` holds."""


class IncidentRow(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[int] = mapped_column(Integer)
    # The case status (flows.models.CaseStatus); changed only through flows.record.cases.
    status: Mapped[str] = mapped_column(String(20), default="new")
    flow_run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime]
    document: Mapped[dict[str, Any]]
    # The id of the playbook that handled the incident; NULL for the built-in response.
    playbook: Mapped[str | None] = mapped_column(String(PLAYBOOK_ID_MAX), nullable=True)
    # An analyst's "deny (false positive — stop)": the response was stopped and the
    # incident awaits closure with this disposition (``false_positive``), by whom and why.
    proposed_disposition: Mapped[str | None] = mapped_column(String(40), nullable=True)
    proposed_disposition_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    proposed_disposition_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    proposed_disposition_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ActionRow(Base):
    __tablename__ = "actions"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_actions_idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(400))
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(80))
    target: Mapped[str] = mapped_column(String(300))
    plan_sha256: Mapped[str] = mapped_column(String(64))
    plan: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A request that may change vendor state left for an earlier attempt: if its answer
    # was lost, the state the next attempt finds may be this incident's own doing.
    request_sent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ApprovalRow(Base):
    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    flow_run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    requester: Mapped[str] = mapped_column(String(200))
    plans: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    requested_at: Mapped[datetime]
    deadline: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class SlackApprovalRow(Base):
    """The Slack side of an approval: where its message is and what the service tracks.

    A table of its own (rather than columns on ``approvals``): stores created before Slack
    approvals existed gained it through ``create_all``, which adds tables, not columns.
    """

    __tablename__ = "approval_slack"

    approval_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str] = mapped_column(String(40))
    view: Mapped[dict[str, Any]]
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)
    eligible: Mapped[dict[str, Any]]
    final: Mapped[str | None] = mapped_column(String(20), nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    posted_at: Mapped[datetime]


class ApprovalVoteRow(Base):
    """One click that counted: a user's approve or deny on an approval."""

    __tablename__ = "approval_votes"
    __table_args__ = (
        UniqueConstraint("approval_id", "user_id", "vote", name="uq_approval_votes_user_vote"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str] = mapped_column(String(40))
    vote: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]


class ApprovalAttemptRow(Base):
    """A decision the flow could not verify (a forged or malformed resume), kept as evidence.

    The request stays pending and its run goes back to waiting; ``attempt`` counts the
    resumes of one request, from 1.
    """

    __tablename__ = "approval_attempts"

    approval_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    claimed_by: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(40))
    problem: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]


class BudgetClaimRow(Base):
    """One unit of a blast-radius budget, spent by an unattended action (one per plan key)."""

    __tablename__ = "budget_claims"
    __table_args__ = (Index("ix_budget_claims_window", "tenant", "action", "claimed_at"),)

    idempotency_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(80))
    incident_id: Mapped[str] = mapped_column(String(40))
    claimed_at: Mapped[datetime]


class StageEventRow(Base):
    __tablename__ = "stage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    stage: Mapped[str] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime]


class IncidentSummaryRow(Base):
    """Where an incident's Slack summary is, so a re-run updates it instead of posting again."""

    __tablename__ = "incident_summaries"

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(40))
    ts: Mapped[str] = mapped_column(String(40))
    posted_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # What the summary shows (integrations.slack.SummaryView), so a case change made from
    # Slack, the CLI or the API can redraw it in place; NULL for summaries posted before.
    view: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class IncidentHuntRow(Base):
    """One indicator of an incident hunted across the EDR: counts and the capped summary.

    ``summary`` is a :class:`flows.models.HuntSummary` as JSON (host names capped, the
    rest counted); a re-run replaces it.
    """

    __tablename__ = "incident_hunts"

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    value: Mapped[str] = mapped_column(String(253), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(40))
    host_count: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]]
    complete: Mapped[bool] = mapped_column(Boolean)
    hunted_at: Mapped[datetime]


class DeadLetterRow(Base):
    """An alert payload that was rejected, kept with the reason for inspection.

    ``payload`` is printable text (JSON with ASCII escapes, or the body with undecodable
    bytes replaced); ``raw``, when set, is exactly the bytes received: a body that is not
    UTF-8 or JSON, or an item refused before it could be parsed.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(300))
    field: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)


# Detect: alerts, the entities correlation joins on, triage, poller cursors ------------
class AlertRow(Base):
    """One accepted alert. ``(tenant, fingerprint)`` is unique: the same alert is stored once.

    The fingerprint is unique per tenant rather than store-wide so that one tenant's
    webhook cannot suppress another tenant's alert by replaying its uid. ``raw`` is the
    vendor payload; for ``ocsf`` sources it is ``None`` because ``finding`` is that payload,
    stored as received.
    """

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("tenant", "fingerprint", name="uq_alerts_fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(63))
    source: Mapped[str] = mapped_column(String(63))
    fingerprint: Mapped[str] = mapped_column(String(64))
    finding_uid: Mapped[str] = mapped_column(String(500))
    severity: Mapped[int] = mapped_column(Integer)
    occurred_ms: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime]
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    entities: Mapped[list[str]] = mapped_column(JSON)
    finding: Mapped[dict[str, Any]]
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class IncidentEntityRow(Base):
    """An entity (host, user, hash, external IP) an incident names, and when it was seen.

    Times are epoch milliseconds of the alerts (OCSF ``time``), not of their arrival.
    """

    __tablename__ = "incident_entities"
    __table_args__ = (Index("ix_incident_entities_lookup", "tenant", "kind", "value"),)

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    value: Mapped[str] = mapped_column(String(300), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    first_seen_ms: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)


class IncidentTriageRow(Base):
    """What intake decided about an incident: its score and whether its flow was started."""

    __tablename__ = "incident_triage"

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    score: Mapped[int] = mapped_column(Integer)
    severity: Mapped[int] = mapped_column(Integer)
    alert_count: Mapped[int] = mapped_column(Integer)
    started: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class IncidentStartRow(Base):
    """The outbox of incident runs: one row per incident intake decided to start.

    Written in the transaction that acknowledges the alerts, so an incident answered as
    ``started`` is never forgotten by a crash before its run exists; ``started_at`` is set
    once a run was created (or found). ``claimed_at`` is a lease: a drainer that died
    mid-start leaves the row to the next one after it lapses.
    """

    __tablename__ = "incident_starts"

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class CursorRow(Base):
    """Where a poller of one tenant's source stopped; the value is opaque to intake."""

    __tablename__ = "cursors"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    source: Mapped[str] = mapped_column(String(63), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


# Cases: who owns an incident, what they wrote and concluded ----------------------------
# Each row is written in the same transaction as its ledger entry (``ledger_seq``), so the
# tables and the hash chain never disagree.
class CaseTransitionRow(Base):
    """A change of case status: who, when and why; a closure carries its disposition."""

    __tablename__ = "case_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    disposition: Mapped[str | None] = mapped_column(String(30), nullable=True)
    duplicate_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    at: Mapped[datetime]
    ledger_seq: Mapped[int] = mapped_column(Integer)


class CaseNoteRow(Base):
    """One analyst note; notes are only ever appended."""

    __tablename__ = "case_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    author: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    ledger_seq: Mapped[int] = mapped_column(Integer)


class CaseAssignmentRow(Base):
    """Who an incident was given to; the latest row is the current assignee."""

    __tablename__ = "case_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    assignee: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    ledger_seq: Mapped[int] = mapped_column(Integer)


class CaseLinkRow(Base):
    """A link from one incident to another: ``duplicate-of``, ``related``, ``merged-into``."""

    __tablename__ = "case_links"

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    linked_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    ledger_seq: Mapped[int] = mapped_column(Integer)


class SlaEventRow(Base):
    """An SLA warning or breach the sweep recorded; each happens once per incident and clock."""

    __tablename__ = "sla_events"
    __table_args__ = (UniqueConstraint("incident_id", "clock", "kind", name="uq_sla_events_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    severity: Mapped[str] = mapped_column(String(20))
    clock: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(10))
    deadline: Mapped[datetime]
    at: Mapped[datetime]


# The ledger -----------------------------------------------------------------------------
class LedgerEntryRow(Base):
    """One ledger entry as stored; see :class:`LedgerEntry` for the fields."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        # No two entries can chain from the same predecessor: the chain cannot fork even
        # if a writer bypasses the append lock.
        UniqueConstraint("prev_hash", name="uq_ledger_entries_prev_hash"),
        UniqueConstraint("entry_hash", name="uq_ledger_entries_entry_hash"),
        # An action's idempotency key (incident, verb, target) is unique among
        # the entries where it took effect, and an approval is decided once.
        Index(
            "uq_ledger_entries_once",
            "idempotency_key",
            unique=True,
            sqlite_where=text("kind = 'decision' OR status IN ('executed', 'already_done')"),
            postgresql_where=text("kind = 'decision' OR status IN ('executed', 'already_done')"),
        ),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(10))
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    capability: Mapped[str | None] = mapped_column(String(20))
    verb: Mapped[str | None] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(300))
    target_label: Mapped[str | None] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    plan_sha256: Mapped[str | None] = mapped_column(String(64))
    plan_sha256s: Mapped[list[str]] = mapped_column(JSON)
    approval_id: Mapped[str | None] = mapped_column(String(40))
    approvers: Mapped[list[str]] = mapped_column(JSON)
    verdict: Mapped[str | None] = mapped_column(String(20))
    vendor: Mapped[str | None] = mapped_column(String(40))
    vendor_request_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(400))
    inverse_action: Mapped[str | None] = mapped_column(String(80))
    recorded_at: Mapped[datetime]
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    # HMAC of entry_hash under the ledger key: a correctly chained entry appended by
    # someone without the key does not carry a valid one. NULL on entries written
    # before revision 0004; an anchor covers those.
    entry_mac: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LedgerCheckpointRow(Base):
    """The ledger head as of the last verification, so the next one walks only what follows.

    ``name`` is ``chain`` (the one chain); ``seq`` and ``entry_hash`` are the head that
    verified, ``verified_at`` when.
    """

    __tablename__ = "ledger_checkpoints"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))
    verified_at: Mapped[datetime]


# Investigate: threat-intelligence answers ----------------------------------------------
class IntelCacheRow(Base):
    """A reputation service's answer about one indicator, reused until ``expires_at``.

    Keyed by tenant as well: each tenant's lookups are made with its own API key and
    spend its own quota, so one tenant's answer is never served on another's behalf.
    ``report`` is the :class:`~integrations.capabilities.IntelReport` as JSON.
    """

    __tablename__ = "intel_cache"

    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(40), primary_key=True)
    indicator: Mapped[str] = mapped_column(String(300), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    report: Mapped[dict[str, Any]]
    fetched_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class IncidentIntelRow(Base):
    """What the investigate stage learned of one of an incident's indicators from one vendor.

    ``cached`` says the answer came from :class:`IntelCacheRow` (no vendor request).
    """

    __tablename__ = "incident_intel"

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(40), primary_key=True)
    indicator: Mapped[str] = mapped_column(String(300), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(12))
    report: Mapped[dict[str, Any]]
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    looked_up_at: Mapped[datetime]
