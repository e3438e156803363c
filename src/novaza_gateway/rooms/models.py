"""Encounter rooms: one row per (tenant, encounter), archived softly, reopened by a create."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime

ACTIVE = "active"
ARCHIVED = "archived"
RESOURCE = "personeo_room"  # audit resource type


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


def snapshot(room: Room) -> dict[str, Any]:
    """What an audit row keeps of a room: state, not clinical content (no display name)."""
    return {
        "status": room.status,
        "encounter": room.visit_number,
        "remoteId": room.remote_id,
        "members": len(room.members),
    }


class ReconcileItem(Base):
    """A call to a tenant's Personeo whose local half may not have committed (ADR 0051).

    Written ahead of the call in its own transaction; the request that commits its room
    deletes it in the same transaction. What remains is the reconciler's work: ``action``
    ``undo_create`` archives a remote room no local room holds, ``finish_archive`` archives
    the remote room and then the local one. Status ``pending`` (a request is in flight),
    ``queued``, ``done`` or ``dead``; ``claim``/``lease_until`` keep replicas apart.
    """

    __tablename__ = "rooms_reconcile"
    __table_args__ = (
        Index("ix_rooms_reconcile_due", "status", "next_attempt_at"),
        Index("ix_rooms_reconcile_room", "tenant_id", "room_id"),
        Index("ix_rooms_reconcile_claim", "claim"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    room_id: Mapped[str] = mapped_column(String(32))  # the gateway's id: Personeo's externalId
    action: Mapped[str] = mapped_column(String(16))
    remote_id: Mapped[str | None] = mapped_column(String(128))  # unknown until Personeo answers
    requested_by: Mapped[str | None] = mapped_column(String(255))  # subject, for an archive
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    claim: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
