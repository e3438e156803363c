"""The HL7 HTTP operations: intake of one ADT or ORM message, ORU send, message status."""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core import audit
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import after_commit, utcnow
from novaza_gateway.core.errors import Conflict, UnsupportedMediaType, ValidationFailed
from novaza_gateway.core.tenancy import TenantContext
from novaza_gateway.hl7 import intake, metering, outgoing, repository
from novaza_gateway.hl7.area import Hl7Area
from novaza_gateway.hl7.errors import MessageNotFound
from novaza_gateway.hl7.outcome import Outcome, reject
from novaza_gateway.hl7.parser import ParseError, encode, parse
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.repository import DEAD, QUEUED
from novaza_gateway.hl7.schemas import AttemptOut, MessageOut, QueuedOut, SendOruIn

ER7_MEDIA_TYPES = frozenset(
    {"application/hl7-v2", "x-application/hl7-v2+er7", "application/hl7-v2+er7", "text/plain"}
)


def message_bytes(body: bytes, content_type: str) -> bytes:
    """The ER7 message of a request body: as sent, or from JSON ``{"message": "..."}``."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in ER7_MEDIA_TYPES:
        return body
    if media_type != "application/json":
        raise UnsupportedMediaType(
            "Send ER7 (application/hl7-v2, x-application/hl7-v2+er7, text/plain) or JSON."
        )
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationFailed.field("body", "not valid JSON") from None
    message = document.get("message") if isinstance(document, dict) else None
    if not isinstance(message, str) or not message.strip():
        raise ValidationFailed.field("message", "an HL7 v2 message in ER7 is required")
    return encode(message)


async def receive(
    area: Hl7Area,
    tenant: TenantContext,
    actor: Actor,
    body: bytes,
    content_type: str,
    accepts: frozenset[str],
) -> Outcome:
    """One message over HTTP: answered AR at once when it is not taken, else stored and
    processed in the intake batcher's next group commit (ADR 0016), with MLLP's messages;
    the outcome comes once that transaction has committed (and billed the message)."""
    data = message_bytes(body, content_type)
    try:
        message = parse(data)
        intake.check_type(message.header, accepts)
    except ParseError as error:
        return reject(data, error)
    ctx = Hl7Context(tenant.id, actor, await area.settings.for_tenant(tenant.id))
    return await area.batcher.submit(intake.Received(ctx, data, message, "http"))


async def send_oru(
    session: AsyncSession, area: Hl7Area, tenant: TenantContext, actor: Actor, body: SendOruIn
) -> QueuedOut:
    settings = await area.settings.for_tenant(tenant.id)
    row = await outgoing.queue_oru(session, actor, tenant.id, settings, body)
    after_commit(session, area.outbox.nudge)
    if area.usage is not None:
        usage, message_id = area.usage, row.id

        async def billable() -> None:
            metering.record_outbound(usage, tenant.id, message_id)

        after_commit(session, billable)
    return QueuedOut(message_id=row.id, control_id=row.control_id, status=row.status)


async def get_message(session: AsyncSession, tenant: TenantContext, message_id: str) -> MessageOut:
    out = await repository.outbound(session, tenant.id, message_id)
    if out is not None:
        tried = await repository.attempts(session, tenant.id, message_id)
        return MessageOut(
            message_id=out.id,
            direction="outbound",
            message_type=out.message_type,
            control_id=out.control_id,
            status=out.status,
            ack_code=out.ack_code,
            created_at=out.created_at,
            destination=out.destination,
            attempts=[
                AttemptOut(
                    at=a.at,
                    outcome=a.outcome,
                    ack_code=a.ack_code,
                    detail=a.detail,
                    duration_ms=a.duration_ms,
                )
                for a in tried
            ],
            next_attempt_at=out.next_attempt_at if out.status == QUEUED else None,
            delivered_at=out.delivered_at,
            last_error=out.last_error,
        )
    received = await repository.inbound(session, tenant.id, message_id)
    if received is None:
        raise MessageNotFound()
    return MessageOut(
        message_id=received.id,
        direction="inbound",
        message_type=f"{received.message_type}^{received.trigger_event}",
        control_id=received.control_id,
        status=received.status,
        ack_code=received.ack_code,
        created_at=received.received_at,
        last_error=received.error_text,
    )


async def requeue(
    session: AsyncSession, area: Hl7Area, tenant: TenantContext, actor: Actor, message_id: str
) -> MessageOut:
    """A dead ORU back to the queue, due now (its attempt count starts over)."""
    row = await repository.outbound(session, tenant.id, message_id)
    if row is None:
        raise MessageNotFound()
    if row.status != DEAD:
        raise Conflict("Only a dead message can be re-queued.")
    now = utcnow()
    row.status, row.attempts, row.next_attempt_at, row.updated_at = QUEUED, 0, now, now
    audit.record(
        session, actor, "hl7.oru.requeue", "hl7_message", row.id,
        tenant_id=tenant.id, patient_id=row.patient_id,
    )  # fmt: skip
    after_commit(session, area.outbox.nudge)
    return await get_message(session, tenant, message_id)
