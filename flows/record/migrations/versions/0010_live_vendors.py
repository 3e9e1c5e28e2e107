"""Actions remember whether a request that may have changed vendor state left for them.

An attempt whose answer was lost (a timeout, a 5xx after the vendor acted) leaves the
vendor's state unknown; the next attempt that finds the state already in place takes it
as this incident's own doing, not as ``already_done``.

Revision ID: 0010_live_vendors
Revises: 0006_cases
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_live_vendors"
down_revision = "0006_cases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "actions",
        sa.Column("request_sent", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # Batch mode: SQLite rebuilds the table where it cannot drop the column in place.
    with op.batch_alter_table("actions") as batch:
        batch.drop_column("request_sent")
