"""Audit trail: who did what to which resource, when, with what outcome.

Written in the same transaction as the change it describes, so there is never a change
without its record nor a record of a change that rolled back. A row names the gateway's own
request id (and the caller's, apart), the subject, and — for a ``tenant:override`` caller
acting through ``X-Tenant-ID`` — its home tenant and the override. Rows are hash-chained per
tenant after they commit (``core.auditchain``), so an edit or a deletion shows. For the same
transaction's sake a row must always be storable: each text field is clipped to its column
(a 4,001-character identifier the route did not bound would otherwise fail the insert, and
with it the change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, String, false, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.logging import caller_request_id_var, request_id_var


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_at", "tenant_id", "at"),
        Index("ix_audit_events_patient", "tenant_id", "patient_id"),
        Index("ix_audit_events_chain", "tenant_id", "chain_seq"),
        # the sealer's pass finds rows not yet chained without reading the sealed history
        Index(
            "ix_audit_events_unsealed",
            "at",
            "id",
            postgresql_where=text("chain_seq IS NULL"),
            sqlite_where=text("chain_seq IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    tenant_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(255))
    patient_id: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(128))  # the gateway's own
    caller_request_id: Mapped[str | None] = mapped_column(String(128))
    home_tenant_id: Mapped[str | None] = mapped_column(String(255))  # the token's, on override
    via_override: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # none_as_null: "no snapshot" is SQL NULL, not the JSON text null
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The per-tenant hash chain, filled by the sealer after commit (core.auditchain).
    chain_seq: Mapped[int | None] = mapped_column(BigInteger)
    chain_prev: Mapped[str | None] = mapped_column(String(64))
    chain_hash: Mapped[str | None] = mapped_column(String(64))


# Column name -> its size, from the model: the clip follows a migration that widens one.
COLUMN_SIZES: dict[str, int] = {
    column.name: column.type.length
    for column in AuditEvent.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


def clip(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every text field cut to its column's size and no NUL (PostgreSQL's
    text cannot hold one); in place, and returned."""
    for name, size in COLUMN_SIZES.items():
        value = row.get(name)
        if isinstance(value, str) and (len(value) > size or "\x00" in value):
            row[name] = value.replace("\x00", "\ufffd")[:size]
    return row


@dataclass(frozen=True, slots=True)
class Actor:
    subject: str
    tenant_id: str | None = None
    home_tenant: str | None = None  # the token's own tenant, when acting for another
    override: bool = False  # acting for ``tenant_id`` through X-Tenant-ID


def values(
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    *,
    tenant_id: str | None = None,
    patient_id: str | None = None,
    outcome: str = "success",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An audit row's columns: the one place that says what an event records (an insert
    that bypasses the session, e.g. HL7 group writes, takes these too)."""
    return clip(
        {
            "id": new_id(),
            "at": utcnow(),
            "tenant_id": tenant_id if tenant_id is not None else actor.tenant_id,
            "actor": actor.subject,
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "patient_id": patient_id,
            "outcome": outcome,
            "request_id": request_id_var.get(),
            "caller_request_id": caller_request_id_var.get(),
            "home_tenant_id": actor.home_tenant,
            "via_override": actor.override,
            "before": before,
            "after": after,
        }
    )


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str | None,
    *,
    tenant_id: str | None = None,
    patient_id: str | None = None,
    outcome: str = "success",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        **values(
            actor,
            action,
            resource_type,
            resource_id,
            tenant_id=tenant_id,
            patient_id=patient_id,
            outcome=outcome,
            before=before,
            after=after,
        )
    )
    session.add(event)
    return event
