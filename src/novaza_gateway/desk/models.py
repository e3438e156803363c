"""Desk contacts and their outbox, both tenant-scoped.

A contact is keyed by (tenant, external id): the integrator's own id. ``content_hash`` is
the SHA-256 of the contact's normalized content, so a re-sent unchanged contact is found
unchanged without comparing every field. A deleted contact keeps its row (``deleted_at``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime


class DeskContact(Base):
    __tablename__ = "desk_contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id", name="uq_desk_contacts_external"),
        Index("ix_desk_contacts_tenant_updated", "tenant_id", "updated_at", "id"),
        Index("ix_desk_contacts_tenant_patient", "tenant_id", "patient_id"),
        # requeue of every failed push: only the failed rows, however many contacts
        Index(
            "ix_desk_contacts_failed",
            "tenant_id",
            postgresql_where=text("sync_status = 'failed'"),
            sqlite_where=text("sync_status = 'failed'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    external_id: Mapped[str] = mapped_column(String(255))
    given_name: Mapped[str] = mapped_column(String(255))
    family_name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255))
    emails: Mapped[list[str]] = mapped_column(JSON)
    phones: Mapped[list[str]] = mapped_column(JSON)
    organization: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)
    patient_id: Mapped[str | None] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    sync_status: Mapped[str | None] = mapped_column(String(16))  # upstream mode only
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DeskOutboxEntry(Base):
    """One version of a contact to push to the tenant's Desk; superseded by a newer one."""

    __tablename__ = "desk_outbox"
    __table_args__ = (
        Index("ix_desk_outbox_due", "status", "next_attempt_at"),
        Index("ix_desk_outbox_contact", "tenant_id", "contact_id", "status"),
        Index("ix_desk_outbox_claim", "claim"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    contact_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # queued sending delivered dead superseded
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    claim: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
