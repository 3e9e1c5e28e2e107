"""Threat-intelligence answers: a per-tenant cache by indicator and vendor, and per incident.

Revision ID: 0007_intel_cache
Revises: 0012_hunts
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_intel_cache"
down_revision = "0012_hunts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intel_cache",
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("vendor", sa.String(40), nullable=False),
        sa.Column("indicator", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "vendor", "indicator"),
    )
    op.create_index("ix_intel_cache_expires_at", "intel_cache", ["expires_at"])
    op.create_table(
        "incident_intel",
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("vendor", sa.String(40), nullable=False),
        sa.Column("indicator", sa.String(300), nullable=False),
        sa.Column("verdict", sa.String(12), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("looked_up_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", "vendor", "indicator"),
    )


def downgrade() -> None:
    op.drop_table("incident_intel")
    op.drop_index("ix_intel_cache_expires_at", table_name="intel_cache")
    op.drop_table("intel_cache")
