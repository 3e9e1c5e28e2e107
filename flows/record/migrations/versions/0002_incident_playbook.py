"""Incidents record the playbook that handled them (``NULL``: the built-in response).

Revision ID: 0002_incident_playbook
Revises: 0001_baseline
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_incident_playbook"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incidents", sa.Column("playbook", sa.String(80), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table where it cannot drop the column in place.
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("playbook")
