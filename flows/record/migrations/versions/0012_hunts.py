"""What the investigate stage's hunts found, per incident and indicator.

Revision ID: 0012_hunts
Revises: 0011_outbox
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_hunts"
down_revision = "0011_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_hunts",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("value", sa.String(253), nullable=False),
        sa.Column("vendor", sa.String(40), nullable=False),
        sa.Column("host_count", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("hunted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", "kind", "value"),
    )


def downgrade() -> None:
    op.drop_table("incident_hunts")
