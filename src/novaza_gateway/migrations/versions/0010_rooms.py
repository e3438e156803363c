"""rooms: Personeo encounter rooms

Revision ID: 0010_rooms
Revises: 0009_ai
Create Date: 2026-12-06 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_rooms"
down_revision = "0009_ai"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("encounter_id", sa.String(length=32), nullable=False),
        sa.Column("visit_number", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rooms")),
        sa.UniqueConstraint("tenant_id", "encounter_id", name="uq_rooms_encounter"),
    )
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.create_index("ix_rooms_tenant_visit", ["tenant_id", "visit_number"], unique=False)
        batch_op.create_index(
            "ix_rooms_tenant_status", ["tenant_id", "status", "updated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_index("ix_rooms_tenant_status")
        batch_op.drop_index("ix_rooms_tenant_visit")
    op.drop_table("rooms")
