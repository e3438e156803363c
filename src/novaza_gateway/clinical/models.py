"""Clinical records shared by the clinical areas: patients, encounters, orders, worklist items.

Every row carries ``tenant_id``; every query takes it. A merged patient keeps its row with
``merged_into_id`` pointing at the survivor, so an old id still resolves.

The many-to-one relationships are never loaded (``lazy="raise"``) nor set: the ids are. They
tell the unit of work that a new patient is inserted before the identifiers, encounters and
orders that name it, and an order before its items, whatever order one flush finds them in
(a group of HL7 messages flushes many records at once).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from novaza_gateway.core.db import Base, UtcDateTime


class Patient(Base):
    __tablename__ = "clinical_patients"
    __table_args__ = (
        Index("ix_clinical_patients_tenant_family", "tenant_id", "family_name"),
        Index("ix_clinical_patients_merged_into", "tenant_id", "merged_into_id"),  # A40 lookups
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    family_name: Mapped[str] = mapped_column(String(255), default="")
    given_name: Mapped[str] = mapped_column(String(255), default="")
    middle_name: Mapped[str] = mapped_column(String(255), default="")
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(8), default="")
    address: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    phone: Mapped[str] = mapped_column(String(64), default="")
    merged_into_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("clinical_patients.id")
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PatientIdentifier(Base):
    """PID-3: one identifier with its assigning authority ('' when the sender gives none)."""

    __tablename__ = "clinical_patient_identifiers"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id",
            "assigning_authority",
            "value",
            name="uq_clinical_patient_identifiers_key",
        ),
        Index("ix_clinical_patient_identifiers_value", "tenant_id", "value"),  # any authority
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    patient_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clinical_patients.id"), index=True
    )
    patient: Mapped[Patient] = relationship(lazy="raise")
    value: Mapped[str] = mapped_column(String(128))
    assigning_authority: Mapped[str] = mapped_column(String(128), default="")
    type_code: Mapped[str] = mapped_column(String(16), default="")


class Encounter(Base):
    __tablename__ = "clinical_encounters"
    __table_args__ = (
        UniqueConstraint("tenant_id", "visit_number", name="uq_clinical_encounters_visit"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    patient_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clinical_patients.id"), index=True
    )
    patient: Mapped[Patient] = relationship(lazy="raise")
    visit_number: Mapped[str] = mapped_column(String(128))
    patient_class: Mapped[str] = mapped_column(String(8), default="")
    location: Mapped[str] = mapped_column(String(255), default="")
    prior_location: Mapped[str] = mapped_column(String(255), default="")
    attending: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16))
    admitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    discharged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Order(Base):
    __tablename__ = "clinical_orders"
    __table_args__ = (
        UniqueConstraint("tenant_id", "placer_order_number", name="uq_clinical_orders_placer"),
        Index("ix_clinical_orders_filler", "tenant_id", "filler_order_number"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    patient_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clinical_patients.id"), index=True
    )
    patient: Mapped[Patient] = relationship(lazy="raise")
    placer_order_number: Mapped[str] = mapped_column(String(128))
    filler_order_number: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16))
    ordering_provider: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class WorklistItem(Base):
    """A scheduled procedure step, as the modality worklist shows it (IHE SWF)."""

    __tablename__ = "clinical_worklist_items"
    __table_args__ = (
        UniqueConstraint("tenant_id", "accession_number", name="uq_clinical_worklist_accession"),
        Index("ix_clinical_worklist_items_schedule", "tenant_id", "status", "scheduled_start"),
        Index("ix_clinical_worklist_items_study", "tenant_id", "study_instance_uid"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    order_id: Mapped[str] = mapped_column(String(32), ForeignKey("clinical_orders.id"), index=True)
    patient_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("clinical_patients.id"), index=True
    )
    order: Mapped[Order] = relationship(lazy="raise")
    patient: Mapped[Patient] = relationship(lazy="raise")
    accession_number: Mapped[str] = mapped_column(String(64))
    # The Study Instance UID the modality is to use (MWL answers it), set when the order is placed.
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    placer_order_number: Mapped[str] = mapped_column(String(128))
    filler_order_number: Mapped[str] = mapped_column(String(128), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(64), default="")
    requested_procedure_code: Mapped[str] = mapped_column(String(64), default="")
    requested_procedure_scheme: Mapped[str] = mapped_column(String(64), default="")
    requested_procedure_description: Mapped[str] = mapped_column(String(255), default="")
    scheduled_procedure_step_id: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    scheduled_start: Mapped[datetime | None] = mapped_column(UtcDateTime())  # set on placing
    station_ae_title: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    ordering_provider: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
