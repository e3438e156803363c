"""worklist study UIDs, study QC confirmation

Revision ID: 0005_worklist_qc
Revises: 0004_imaging, 0002_hl7

It changes tables of both branches (imaging_studies; clinical_worklist_items, created by
0002_hl7), so it joins them: a dependency alone would leave 0002_hl7 listed as a head
that the version table never records.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_worklist_qc"
down_revision = ("0004_imaging", "0002_hl7")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clinical_worklist_items", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("study_instance_uid", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.create_index(
            "ix_clinical_worklist_items_study", ["tenant_id", "study_instance_uid"], unique=False
        )
    # Items placed before this revision get the UID new items get (orders.study_uid_for).
    items = sa.table(
        "clinical_worklist_items", sa.column("id", sa.String), sa.column("study_instance_uid")
    )
    connection = op.get_bind()
    ids = connection.execute(sa.select(items.c.id).where(items.c.study_instance_uid == "")).all()
    for (item_id,) in ids:
        connection.execute(
            items.update()
            .where(items.c.id == item_id)
            .values(study_instance_uid=f"2.25.{int(item_id, 16)}")
        )
    with op.batch_alter_table("imaging_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qc_confirmed_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("qc_confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("qc_notes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("imaging_studies", schema=None) as batch_op:
        batch_op.drop_column("qc_notes")
        batch_op.drop_column("qc_confirmed_at")
        batch_op.drop_column("qc_confirmed_by")
    with op.batch_alter_table("clinical_worklist_items", schema=None) as batch_op:
        batch_op.drop_index("ix_clinical_worklist_items_study")
        batch_op.drop_column("study_instance_uid")
