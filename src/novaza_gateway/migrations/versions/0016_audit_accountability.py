"""audit: the gateway's and the caller's request ids apart, override attribution, and the
per-tenant hash chain with its heads (ADR 0081)

Revision ID: 0016_audit_accountability
Revises: 0015_hl7_reprocess
Create Date: 2026-12-08 00:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_audit_accountability"
down_revision = "0015_hl7_reprocess"
branch_labels = None
depends_on = None

UNSEALED = sa.text("chain_seq IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("caller_request_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("home_tenant_id", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("via_override", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain_prev", sa.String(64), nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
        batch.create_index("ix_audit_events_chain", ["tenant_id", "chain_seq"], unique=False)
    op.create_index(
        "ix_audit_events_unsealed",
        "audit_events",
        ["at", "id"],
        postgresql_where=UNSEALED,
        sqlite_where=UNSEALED,
    )
    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chain_heads")),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_unsealed", table_name="audit_events")
    op.drop_table("audit_chain_heads")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_chain")
        for column in (
            "chain_hash",
            "chain_prev",
            "chain_seq",
            "via_override",
            "home_tenant_id",
            "caller_request_id",
        ):
            batch.drop_column(column)
