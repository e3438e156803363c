"""The embedded archive's index: patient, study, series and instance, every row by tenant.

The index holds the keys, the attributes QIDO matches on (plain columns, with normalized
copies of person names for fuzzy matching), the attributes QIDO returns (``attributes``:
DICOM JSON of that level's tags) and where each instance's file lives. The files themselves
are in the archive storage; an instance row is written only after its file is on disk.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime

UID = String(64)


class ImagingPatient(Base):
    __tablename__ = "imaging_patients"
    __table_args__ = (
        UniqueConstraint("tenant_id", "patient_id", name="uq_imaging_patients_key"),
        Index("ix_imaging_patients_name", "tenant_id", "patient_name_norm"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_norm: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ImagingStudy(Base):
    __tablename__ = "imaging_studies"
    __table_args__ = (
        UniqueConstraint("tenant_id", "study_uid", name="uq_imaging_studies_key"),
        Index("ix_imaging_studies_date", "tenant_id", "study_date", "study_time"),
        Index("ix_imaging_studies_patient", "tenant_id", "patient_id"),
        Index("ix_imaging_studies_name", "tenant_id", "patient_name_norm"),
        Index("ix_imaging_studies_accession", "tenant_id", "accession_number"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    patient_pk: Mapped[str] = mapped_column(String(32), ForeignKey("imaging_patients.id"))
    study_uid: Mapped[str] = mapped_column(UID)
    # Patient attributes as this study carries them (QIDO study searches need no join).
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_norm: Mapped[str] = mapped_column(String(324), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")  # HHMMSS.ffffff, padded
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(128), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    referring_physician_norm: Mapped[str] = mapped_column(String(324), default="")
    modalities: Mapped[str] = mapped_column(String(255), default="")  # "|CT|MR|"
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ImagingSeries(Base):
    __tablename__ = "imaging_series"
    __table_args__ = (
        UniqueConstraint("tenant_id", "series_uid", name="uq_imaging_series_key"),
        Index("ix_imaging_series_study", "study_pk"),
        Index("ix_imaging_series_modality", "tenant_id", "modality"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    study_pk: Mapped[str] = mapped_column(String(32), ForeignKey("imaging_studies.id"))
    series_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(String(128), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ImagingInstance(Base):
    __tablename__ = "imaging_instances"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sop_instance_uid", name="uq_imaging_instances_key"),
        Index("ix_imaging_instances_series", "series_pk"),
        Index("ix_imaging_instances_study", "study_pk"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    study_pk: Mapped[str] = mapped_column(String(32), ForeignKey("imaging_studies.id"))
    series_pk: Mapped[str] = mapped_column(String(32), ForeignKey("imaging_series.id"))
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    pixel_offset: Mapped[int | None] = mapped_column(BigInteger)  # file offset of native pixels
    pixel_length: Mapped[int | None] = mapped_column(BigInteger)
    frame_bytes: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ImagingQc(Base):
    """A study's QC confirmation, keyed by (tenant, Study Instance UID) and nothing else: the
    study may live in the embedded index or in the tenant's upstream PACS (proxy mode), and
    the record outlives a switch between the two (ADR 0035). No row: QC is pending."""

    __tablename__ = "imaging_qc"
    __table_args__ = (UniqueConstraint("tenant_id", "study_uid", name="uq_imaging_qc_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    study_uid: Mapped[str] = mapped_column(UID)
    result: Mapped[str] = mapped_column(String(16))  # passed, failed
    confirmed_by: Mapped[str] = mapped_column(String(255))
    confirmed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    notes: Mapped[str | None] = mapped_column(Text)
    # What the study carried when it was confirmed (its DICOM Patient ID and accession).
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
