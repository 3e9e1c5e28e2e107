"""The outbox of incident runs, and dead letters that keep the bytes as received.

Revision ID: 0011_outbox
Revises: 0008_speed
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_outbox"
down_revision = "0008_speed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_starts",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("incident_id"),
    )
    op.create_index("ix_incident_starts_started_at", "incident_starts", ["started_at"])
    op.add_column("dead_letters", sa.Column("raw", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table where it cannot drop the column in place.
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("raw")
    op.drop_index("ix_incident_starts_started_at", table_name="incident_starts")
    op.drop_table("incident_starts")
