"""imaging QC records of their own (both modes); clinical indexes for merge lookups

Revision ID: 0008_imaging_qc_merges
Revises: 0006_hl7_speed

QC moves from columns of ``imaging_studies`` (embedded index only) to ``imaging_qc`` keyed by
(tenant, Study Instance UID), so a study that lives in a tenant's upstream PACS (proxy mode)
can be confirmed too (ADR 0035). Confirmations already recorded are copied over.

QIDO resolves ADT A40 merges at query time (``clinical.merges``): the identifiers a page of
studies carries are looked up by value, and a patient is a survivor when another patient's
``merged_into_id`` names it. Both lookups get an index (neither column led one).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_imaging_qc_merges"
down_revision = "0006_hl7_speed"
branch_labels = None
depends_on = None

QC_COLUMNS = ("qc_status", "qc_confirmed_by", "qc_confirmed_at", "qc_notes")
QC_SOURCES = ("result", "confirmed_by", "confirmed_at", "notes")


def upgrade() -> None:
    op.create_table(
        "imaging_qc",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("confirmed_by", sa.String(length=255), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "study_uid", name="uq_imaging_qc_key"),
    )
    op.execute(
        "INSERT INTO imaging_qc (id, tenant_id, study_uid, result, confirmed_by, confirmed_at,"
        " notes, patient_id, accession_number)"
        " SELECT id, tenant_id, study_uid, qc_status, COALESCE(qc_confirmed_by, ''),"
        " qc_confirmed_at, qc_notes, patient_id, accession_number FROM imaging_studies"
        " WHERE qc_status <> 'pending' AND qc_confirmed_at IS NOT NULL"
    )
    with op.batch_alter_table("imaging_studies", schema=None) as batch_op:
        for column in QC_COLUMNS:
            batch_op.drop_column(column)
    with op.batch_alter_table("clinical_patient_identifiers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_clinical_patient_identifiers_value", ["tenant_id", "value"], unique=False
        )
    with op.batch_alter_table("clinical_patients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_clinical_patients_merged_into", ["tenant_id", "merged_into_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("clinical_patients", schema=None) as batch_op:
        batch_op.drop_index("ix_clinical_patients_merged_into")
    with op.batch_alter_table("clinical_patient_identifiers", schema=None) as batch_op:
        batch_op.drop_index("ix_clinical_patient_identifiers_value")
    with op.batch_alter_table("imaging_studies", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("qc_status", sa.String(length=16), nullable=False, server_default="pending")
        )
        batch_op.add_column(sa.Column("qc_confirmed_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("qc_confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("qc_notes", sa.Text(), nullable=True))
    studies = sa.table(
        "imaging_studies",
        sa.column("tenant_id"),
        sa.column("study_uid"),
        *(sa.column(name) for name in QC_COLUMNS),
    )
    qc = sa.table(
        "imaging_qc",
        *(sa.column(name) for name in ("tenant_id", "study_uid", *QC_SOURCES)),
    )
    same = (qc.c.tenant_id == studies.c.tenant_id) & (qc.c.study_uid == studies.c.study_uid)
    op.execute(
        studies.update()
        .where(sa.exists().where(same))
        .values(
            {
                column: sa.select(qc.c[source]).where(same).scalar_subquery()
                for column, source in zip(QC_COLUMNS, QC_SOURCES, strict=True)
            }
        )
    )
    op.drop_table("imaging_qc")
