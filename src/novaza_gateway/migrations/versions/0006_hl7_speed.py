"""HL7 intake speed: orders found by filler number through an index; no status index on
inbound messages

Revision ID: 0006_hl7_speed
Revises: 0005_worklist_qc

Order messages look orders up by placer or filler number (ORC-2/3, OBR-2/3), a group of them
in one query: without an index the filler number made that a scan of every order. Nothing
reads inbound messages by status (there is no reprocessing step, ADR 0010), and each row is
now written once, with its outcome: the index only cost every insert.
"""

from __future__ import annotations

from alembic import op

revision = "0006_hl7_speed"
down_revision = "0005_worklist_qc"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clinical_orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_clinical_orders_filler", ["tenant_id", "filler_order_number"], unique=False
        )
    with op.batch_alter_table("hl7_inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_hl7_inbound_messages_status")


def downgrade() -> None:
    with op.batch_alter_table("hl7_inbound_messages", schema=None) as batch_op:
        batch_op.create_index("ix_hl7_inbound_messages_status", ["status"], unique=False)
    with op.batch_alter_table("clinical_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_clinical_orders_filler")
