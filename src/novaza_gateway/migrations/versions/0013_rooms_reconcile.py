"""rooms_reconcile: write-ahead intents of calls to a tenant's Personeo (ADR 0051)

Revision ID: 0013_rooms_reconcile
Revises: 0012_idempotency_keys
Create Date: 2026-11-29 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_rooms_reconcile"
down_revision = "0012_idempotency_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rooms_reconcile",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("room_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(length=128), nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rooms_reconcile")),
    )
    with op.batch_alter_table("rooms_reconcile", schema=None) as batch_op:
        batch_op.create_index("ix_rooms_reconcile_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_rooms_reconcile_room", ["tenant_id", "room_id"], unique=False)
        batch_op.create_index("ix_rooms_reconcile_claim", ["claim"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rooms_reconcile", schema=None) as batch_op:
        batch_op.drop_index("ix_rooms_reconcile_claim")
        batch_op.drop_index("ix_rooms_reconcile_room")
        batch_op.drop_index("ix_rooms_reconcile_due")
    op.drop_table("rooms_reconcile")
