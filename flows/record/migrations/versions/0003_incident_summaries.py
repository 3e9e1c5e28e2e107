"""Where each incident's Slack summary is, so a re-run updates it rather than posting again.

Revision ID: 0003_incident_summaries
Revises: 0002_incident_playbook
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_incident_summaries"
down_revision = "0002_incident_playbook"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_summaries",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("incident_id"),
    )


def downgrade() -> None:
    op.drop_table("incident_summaries")
