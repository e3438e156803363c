"""The durable HL7 stores: inbound messages (with the ACK we answered) and the ORU outbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime


class InboundMessage(Base):
    """One received message: raw bytes, routing keys, outcome and the exact ACK sent."""

    __tablename__ = "hl7_inbound_messages"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id",
            "sending_application",
            "sending_facility",
            "control_id",
            name="uq_hl7_inbound_messages_key",
        ),
        Index("ix_hl7_inbound_messages_tenant_received", "tenant_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(8))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sending_application: Mapped[str] = mapped_column(String(180))
    sending_facility: Mapped[str] = mapped_column(String(180))
    receiving_application: Mapped[str] = mapped_column(String(180))
    receiving_facility: Mapped[str] = mapped_column(String(180))
    message_type: Mapped[str] = mapped_column(String(8))
    trigger_event: Mapped[str] = mapped_column(String(8))
    version: Mapped[str] = mapped_column(String(8))
    control_id: Mapped[str] = mapped_column(String(199))
    content_sha256: Mapped[str] = mapped_column(String(64))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    ack_code: Mapped[str | None] = mapped_column(String(2))
    ack: Mapped[bytes | None] = mapped_column(LargeBinary)
    error_code: Mapped[str | None] = mapped_column(String(8))
    error_text: Mapped[str | None] = mapped_column(String(255))
    patient_id: Mapped[str | None] = mapped_column(String(32))
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # ``POST .../reprocess`` of a failed message (ADR 0017): how often, the last time. The
    # ACK columns keep what the sender was answered; the outcome columns the latest run.
    reprocess_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    reprocessed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class OutboundMessage(Base):
    """The outbox: an ORU waiting for (or done with) delivery to a destination over MLLP."""

    __tablename__ = "hl7_outbound_messages"
    __table_args__ = (
        UniqueConstraint("tenant_id", "control_id", name="uq_hl7_outbound_messages_control"),
        Index("ix_hl7_outbound_messages_due", "status", "next_attempt_at"),
        Index("ix_hl7_outbound_messages_fifo", "tenant_id", "patient_key", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    message_type: Mapped[str] = mapped_column(String(16))
    control_id: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str] = mapped_column(String(64))
    patient_key: Mapped[str] = mapped_column(String(128))
    patient_id: Mapped[str | None] = mapped_column(String(32))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    claim: Mapped[str | None] = mapped_column(String(32))  # the sending pass (ADR 0062)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    last_error: Mapped[str | None] = mapped_column(String(255))
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DeliveryAttempt(Base):
    __tablename__ = "hl7_delivery_attempts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    message_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("hl7_outbound_messages.id"), index=True
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    outcome: Mapped[str] = mapped_column(String(16))
    ack_code: Mapped[str | None] = mapped_column(String(2))
    detail: Mapped[str | None] = mapped_column(String(255))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
