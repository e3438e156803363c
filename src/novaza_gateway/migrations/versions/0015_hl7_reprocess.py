"""hl7: reprocessing a failed inbound message (how often, the last time; ADR 0017)

Revision ID: 0015_hl7_reprocess
Revises: 0014_desk_failed_index
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_hl7_reprocess"
down_revision = "0014_desk_failed_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_inbound_messages") as batch:
        batch.add_column(
            sa.Column("reprocess_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("reprocessed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hl7_inbound_messages") as batch:
        batch.drop_column("reprocessed_at")
        batch.drop_column("reprocess_count")
