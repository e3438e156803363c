"""Encounter rooms: one row per (tenant, encounter), archived softly, reopened by a create."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime

ACTIVE = "active"
ARCHIVED = "archived"


class Room(Base):
    """A Personeo room of a clinical encounter. It links a patient: reads and writes are audited."""

    __tablename__ = "rooms"
    __table_args__ = (
        UniqueConstraint("tenant_id", "encounter_id", name="uq_rooms_encounter"),
        Index("ix_rooms_tenant_visit", "tenant_id", "visit_number"),
        Index("ix_rooms_tenant_status", "tenant_id", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    encounter_id: Mapped[str] = mapped_column(String(32))  # clinical_encounters.id
    visit_number: Mapped[str] = mapped_column(String(128))  # the encounter's key in the API
    patient_id: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    members: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    remote_id: Mapped[str | None] = mapped_column(String(128))  # Personeo's id (upstream mode)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    archived_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    archived_by: Mapped[str | None] = mapped_column(String(255))
