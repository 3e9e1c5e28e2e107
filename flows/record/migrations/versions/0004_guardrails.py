"""Guardrails: unverifiable approval attempts, atomic budget claims, ledger entry MACs.

Revision ID: 0004_guardrails
Revises: 0009_analyst_day
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_guardrails"
down_revision = "0009_analyst_day"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_attempts",
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("approval_id", "attempt"),
    )
    op.create_table(
        "budget_claims",
        sa.Column("idempotency_key", sa.String(400), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    op.create_index("ix_budget_claims_window", "budget_claims", ["tenant", "action", "claimed_at"])
    # A nullable column: a plain ALTER TABLE … ADD COLUMN on SQLite and PostgreSQL alike.
    op.add_column("ledger_entries", sa.Column("entry_mac", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("entry_mac")
    op.drop_index("ix_budget_claims_window", table_name="budget_claims")
    op.drop_table("budget_claims")
    op.drop_table("approval_attempts")
