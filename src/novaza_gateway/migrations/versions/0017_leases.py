"""leases (one replica runs a periodic job) and the ORU outbox's claim token (ADR 0062)

Revision ID: 0017_leases
Revises: 0016_audit_accountability
Create Date: 2026-12-08 00:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_leases"
down_revision = "0016_audit_accountability"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("hl7_outbound_messages") as batch:
        batch.add_column(sa.Column("claim", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hl7_outbound_messages") as batch:
        batch.drop_column("claim")
    op.drop_table("leases")
