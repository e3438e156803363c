"""hl7 messages and clinical records

Revision ID: 0002_hl7
Revises: 0001
Create Date: 2026-11-29 05:26:37.341352
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_hl7"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinical_patients",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("family_name", sa.String(length=255), nullable=False),
        sa.Column("given_name", sa.String(length=255), nullable=False),
        sa.Column("middle_name", sa.String(length=255), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(length=8), nullable=False),
        sa.Column("address", sa.JSON(), nullable=False),
        sa.Column("phone", sa.String(length=64), nullable=False),
        sa.Column("merged_into_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into_id"],
            ["clinical_patients.id"],
            name=op.f("fk_clinical_patients_merged_into_id_clinical_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_patients")),
    )
    with op.batch_alter_table("clinical_patients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_clinical_patients_tenant_family", ["tenant_id", "family_name"], unique=False
        )

    op.create_table(
        "hl7_inbound_messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sending_application", sa.String(length=180), nullable=False),
        sa.Column("sending_facility", sa.String(length=180), nullable=False),
        sa.Column("receiving_application", sa.String(length=180), nullable=False),
        sa.Column("receiving_facility", sa.String(length=180), nullable=False),
        sa.Column("message_type", sa.String(length=8), nullable=False),
        sa.Column("trigger_event", sa.String(length=8), nullable=False),
        sa.Column("version", sa.String(length=8), nullable=False),
        sa.Column("control_id", sa.String(length=199), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=True),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("error_code", sa.String(length=8), nullable=True),
        sa.Column("error_text", sa.String(length=255), nullable=True),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_inbound_messages")),
        sa.UniqueConstraint(
            "tenant_id",
            "sending_application",
            "sending_facility",
            "control_id",
            name="uq_hl7_inbound_messages_key",
        ),
    )
    with op.batch_alter_table("hl7_inbound_messages", schema=None) as batch_op:
        batch_op.create_index("ix_hl7_inbound_messages_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_hl7_inbound_messages_tenant_received", ["tenant_id", "received_at"], unique=False
        )

    op.create_table(
        "hl7_outbound_messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_type", sa.String(length=16), nullable=False),
        sa.Column("control_id", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("patient_key", sa.String(length=128), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_code", sa.String(length=2), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_outbound_messages")),
        sa.UniqueConstraint("tenant_id", "control_id", name="uq_hl7_outbound_messages_control"),
    )
    with op.batch_alter_table("hl7_outbound_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hl7_outbound_messages_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_hl7_outbound_messages_fifo",
            ["tenant_id", "patient_key", "created_at"],
            unique=False,
        )

    op.create_table(
        "clinical_encounters",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("visit_number", sa.String(length=128), nullable=False),
        sa.Column("patient_class", sa.String(length=8), nullable=False),
        sa.Column("location", sa.String(length=255), nullable=False),
        sa.Column("prior_location", sa.String(length=255), nullable=False),
        sa.Column("attending", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("discharged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["clinical_patients.id"],
            name=op.f("fk_clinical_encounters_patient_id_clinical_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_encounters")),
        sa.UniqueConstraint("tenant_id", "visit_number", name="uq_clinical_encounters_visit"),
    )
    with op.batch_alter_table("clinical_encounters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinical_encounters_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "clinical_orders",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("placer_order_number", sa.String(length=128), nullable=False),
        sa.Column("filler_order_number", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ordering_provider", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["clinical_patients.id"],
            name=op.f("fk_clinical_orders_patient_id_clinical_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_orders")),
        sa.UniqueConstraint("tenant_id", "placer_order_number", name="uq_clinical_orders_placer"),
    )
    with op.batch_alter_table("clinical_orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinical_orders_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "clinical_patient_identifiers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("assigning_authority", sa.String(length=128), nullable=False),
        sa.Column("type_code", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["clinical_patients.id"],
            name=op.f("fk_clinical_patient_identifiers_patient_id_clinical_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_patient_identifiers")),
        sa.UniqueConstraint(
            "tenant_id", "assigning_authority", "value", name="uq_clinical_patient_identifiers_key"
        ),
    )
    with op.batch_alter_table("clinical_patient_identifiers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinical_patient_identifiers_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "hl7_delivery_attempts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=True),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["hl7_outbound_messages.id"],
            name=op.f("fk_hl7_delivery_attempts_message_id_hl7_outbound_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_delivery_attempts")),
    )
    with op.batch_alter_table("hl7_delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hl7_delivery_attempts_message_id"), ["message_id"], unique=False
        )

    op.create_table(
        "clinical_worklist_items",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=False),
        sa.Column("placer_order_number", sa.String(length=128), nullable=False),
        sa.Column("filler_order_number", sa.String(length=128), nullable=False),
        sa.Column("requested_procedure_id", sa.String(length=64), nullable=False),
        sa.Column("requested_procedure_code", sa.String(length=64), nullable=False),
        sa.Column("requested_procedure_scheme", sa.String(length=64), nullable=False),
        sa.Column("requested_procedure_description", sa.String(length=255), nullable=False),
        sa.Column("scheduled_procedure_step_id", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("scheduled_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("station_ae_title", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ordering_provider", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["clinical_orders.id"],
            name=op.f("fk_clinical_worklist_items_order_id_clinical_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["clinical_patients.id"],
            name=op.f("fk_clinical_worklist_items_patient_id_clinical_patients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_worklist_items")),
        sa.UniqueConstraint("tenant_id", "accession_number", name="uq_clinical_worklist_accession"),
    )
    with op.batch_alter_table("clinical_worklist_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clinical_worklist_items_order_id"), ["order_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_clinical_worklist_items_patient_id"), ["patient_id"], unique=False
        )
        batch_op.create_index(
            "ix_clinical_worklist_items_schedule",
            ["tenant_id", "status", "scheduled_start"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("clinical_worklist_items", schema=None) as batch_op:
        batch_op.drop_index("ix_clinical_worklist_items_schedule")
        batch_op.drop_index(batch_op.f("ix_clinical_worklist_items_patient_id"))
        batch_op.drop_index(batch_op.f("ix_clinical_worklist_items_order_id"))

    op.drop_table("clinical_worklist_items")
    with op.batch_alter_table("hl7_delivery_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hl7_delivery_attempts_message_id"))

    op.drop_table("hl7_delivery_attempts")
    with op.batch_alter_table("clinical_patient_identifiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinical_patient_identifiers_patient_id"))

    op.drop_table("clinical_patient_identifiers")
    with op.batch_alter_table("clinical_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinical_orders_patient_id"))

    op.drop_table("clinical_orders")
    with op.batch_alter_table("clinical_encounters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinical_encounters_patient_id"))

    op.drop_table("clinical_encounters")
    with op.batch_alter_table("hl7_outbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_hl7_outbound_messages_fifo")
        batch_op.drop_index("ix_hl7_outbound_messages_due")

    op.drop_table("hl7_outbound_messages")
    with op.batch_alter_table("hl7_inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_hl7_inbound_messages_tenant_received")
        batch_op.drop_index("ix_hl7_inbound_messages_status")

    op.drop_table("hl7_inbound_messages")
    with op.batch_alter_table("clinical_patients", schema=None) as batch_op:
        batch_op.drop_index("ix_clinical_patients_tenant_family")

    op.drop_table("clinical_patients")
