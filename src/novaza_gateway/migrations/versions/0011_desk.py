"""desk contacts and their outbox

Revision ID: 0011_desk
Revises: 0010_rooms
Create Date: 2026-11-29 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_desk"
down_revision = "0010_rooms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "desk_contacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("given_name", sa.String(length=255), nullable=False),
        sa.Column("family_name", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("phones", sa.JSON(), nullable=False),
        sa.Column("organization", sa.String(length=255), nullable=True),
        sa.Column("title", sa.String(length=255), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sync_status", sa.String(length=16), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_contacts")),
        sa.UniqueConstraint("tenant_id", "external_id", name="uq_desk_contacts_external"),
    )
    with op.batch_alter_table("desk_contacts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_desk_contacts_tenant_updated", ["tenant_id", "updated_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_desk_contacts_tenant_patient", ["tenant_id", "patient_id"], unique=False
        )

    op.create_table(
        "desk_outbox",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_outbox")),
    )
    with op.batch_alter_table("desk_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_desk_outbox_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            "ix_desk_outbox_contact", ["tenant_id", "contact_id", "status"], unique=False
        )
        batch_op.create_index("ix_desk_outbox_claim", ["claim"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("desk_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_desk_outbox_claim")
        batch_op.drop_index("ix_desk_outbox_contact")
        batch_op.drop_index("ix_desk_outbox_due")
    op.drop_table("desk_outbox")
    with op.batch_alter_table("desk_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_desk_contacts_tenant_patient")
        batch_op.drop_index("ix_desk_contacts_tenant_updated")
    op.drop_table("desk_contacts")
