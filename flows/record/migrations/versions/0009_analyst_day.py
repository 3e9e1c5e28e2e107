"""Incidents record an analyst's false-positive stop: the proposed disposition, who, why, when.

Revision ID: 0009_analyst_day
Revises: 0010_live_vendors
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_analyst_day"
down_revision = "0010_live_vendors"
branch_labels = None
depends_on = None

_COLUMNS = (
    "proposed_disposition",
    "proposed_disposition_by",
    "proposed_disposition_reason",
    "proposed_disposition_at",
)


def upgrade() -> None:
    op.add_column("incidents", sa.Column("proposed_disposition", sa.String(40), nullable=True))
    op.add_column("incidents", sa.Column("proposed_disposition_by", sa.String(200), nullable=True))
    op.add_column("incidents", sa.Column("proposed_disposition_reason", sa.Text(), nullable=True))
    op.add_column(
        "incidents",
        sa.Column("proposed_disposition_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table where it cannot drop the columns in place.
    with op.batch_alter_table("incidents") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
