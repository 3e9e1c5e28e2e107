"""Baseline: every table the store had when ``create_all`` still made its schema.

One function per table, so that a store made by ``create_all`` before some of these tables
existed can be given just the ones it lacks when it is adopted (see
``flows.record.migrations.upgrade``).

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


# flows/store.py ---------------------------------------------------------------------------
def _incidents() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_incidents_tenant", "incidents", ["tenant"])


def _actions() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(400), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("plan_sha256", sa.String(64), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key", name="uq_actions_idempotency_key"),
    )
    op.create_index("ix_actions_incident_id", "actions", ["incident_id"])


def _approvals() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("flow_run_id", sa.String(40), nullable=True),
        sa.Column("requester", sa.String(200), nullable=False),
        sa.Column("plans", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_approvals_incident_id", "approvals", ["incident_id"])


def _approval_slack() -> None:
    op.create_table(
        "approval_slack",
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("view", sa.JSON(), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("eligible", sa.JSON(), nullable=False),
        sa.Column("final", sa.String(20), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("approval_id"),
    )


def _approval_votes() -> None:
    op.create_table(
        "approval_votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("vote", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("approval_id", "user_id", "vote", name="uq_approval_votes_user_vote"),
    )
    op.create_index("ix_approval_votes_approval_id", "approval_votes", ["approval_id"])


def _stage_events() -> None:
    op.create_table(
        "stage_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stage_events_incident_id", "stage_events", ["incident_id"])


def _dead_letters() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("field", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


# flows/ledger.py --------------------------------------------------------------------------
_ONCE = "kind = 'decision' OR status IN ('executed', 'already_done')"


def _ledger_entries() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("capability", sa.String(20), nullable=True),
        sa.Column("verb", sa.String(40), nullable=True),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("target_label", sa.Text(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("plan_sha256", sa.String(64), nullable=True),
        sa.Column("plan_sha256s", sa.JSON(), nullable=False),
        sa.Column("approval_id", sa.String(40), nullable=True),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=True),
        sa.Column("vendor", sa.String(40), nullable=True),
        sa.Column("vendor_request_id", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(400), nullable=True),
        sa.Column("inverse_action", sa.String(80), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("prev_hash", name="uq_ledger_entries_prev_hash"),
        sa.UniqueConstraint("entry_hash", name="uq_ledger_entries_entry_hash"),
    )
    op.create_index("ix_ledger_entries_incident_id", "ledger_entries", ["incident_id"])
    op.create_index(
        "uq_ledger_entries_once",
        "ledger_entries",
        ["idempotency_key"],
        unique=True,
        sqlite_where=sa.text(_ONCE),
        postgresql_where=sa.text(_ONCE),
    )


# flows/intake.py --------------------------------------------------------------------------
def _alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("source", sa.String(63), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("finding_uid", sa.String(500), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("occurred_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("entities", sa.JSON(), nullable=False),
        sa.Column("finding", sa.JSON(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "fingerprint", name="uq_alerts_fingerprint"),
    )
    op.create_index("ix_alerts_incident_id", "alerts", ["incident_id"])


def _incident_entities() -> None:
    op.create_table(
        "incident_entities",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.String(300), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", "kind", "value"),
    )
    op.create_index("ix_incident_entities_lookup", "incident_entities", ["tenant", "kind", "value"])


def _incident_triage() -> None:
    op.create_table(
        "incident_triage",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("severity", sa.Integer(), nullable=False),
        sa.Column("alert_count", sa.Integer(), nullable=False),
        sa.Column("started", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("incident_id"),
    )
    op.create_index("ix_incident_triage_tenant", "incident_triage", ["tenant"])


def _cursors() -> None:
    op.create_table(
        "cursors",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("source", sa.String(63), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "source"),
    )


TABLES: dict[str, Callable[[], None]] = {
    "incidents": _incidents,
    "actions": _actions,
    "approvals": _approvals,
    "approval_slack": _approval_slack,
    "approval_votes": _approval_votes,
    "stage_events": _stage_events,
    "dead_letters": _dead_letters,
    "ledger_entries": _ledger_entries,
    "alerts": _alerts,
    "incident_entities": _incident_entities,
    "incident_triage": _incident_triage,
    "cursors": _cursors,
}
"""Each baseline table and the function that creates it with its indexes."""


def upgrade() -> None:
    for create in TABLES.values():
        create()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)  # drops its indexes with it
