"""Incidents become cases: transitions, notes, assignments, links, SLA events, and the
Slack summary's view; the old flow-set statuses are renamed to case statuses.

Revision ID: 0006_cases
Revises: 0003_incident_summaries
Create Date: 2026-11-22
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0006_cases"
down_revision = "0003_incident_summaries"
branch_labels = None
depends_on = None

# What the flow wrote before cases existed, and the case status it means now: "resolved"
# only meant the report was written, and "undone" that containment was reversed.
_RENAMED = {"open": "new", "resolved": "awaiting-closure", "undone": "awaiting-closure"}
_BACK = {
    "new": "open",
    "investigating": "open",
    "remediated": "contained",
    "awaiting-closure": "resolved",
    "closed": "resolved",
    "reopened": "open",
}


def _when() -> sa.Column[datetime]:
    return sa.Column("at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "case_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("from_status", sa.String(20), nullable=False),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("disposition", sa.String(30), nullable=True),
        sa.Column("duplicate_of", sa.String(40), nullable=True),
        _when(),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_transitions_incident_id", "case_transitions", ["incident_id"])
    op.create_table(
        "case_notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _when(),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_notes_incident_id", "case_notes", ["incident_id"])
    op.create_table(
        "case_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        _when(),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_assignments_incident_id", "case_assignments", ["incident_id"])
    op.create_table(
        "case_links",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("linked_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        _when(),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", "linked_id", "kind"),
    )
    op.create_table(
        "sla_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("clock", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        _when(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "clock", "kind", name="uq_sla_events_once"),
    )
    op.create_index("ix_sla_events_incident_id", "sla_events", ["incident_id"])
    op.add_column("incident_summaries", sa.Column("view", sa.JSON(), nullable=True))
    incidents = sa.table("incidents", sa.column("status", sa.String(20)))
    for old, new in _RENAMED.items():
        op.execute(incidents.update().where(incidents.c.status == old).values(status=new))


def downgrade() -> None:
    incidents = sa.table("incidents", sa.column("status", sa.String(20)))
    for new, old in _BACK.items():
        op.execute(incidents.update().where(incidents.c.status == new).values(status=old))
    with op.batch_alter_table("incident_summaries") as batch:
        batch.drop_column("view")
    for name in ("sla_events", "case_links", "case_assignments", "case_notes", "case_transitions"):
        op.drop_table(name)
