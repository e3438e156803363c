"""The HL7 HTTP operations: intake of one ADT or ORM message, ORU send, message status,
requeue of a dead ORU, reprocessing of a failed inbound message."""

from __future__ import annotations

from typing import NoReturn

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
from novaza_gateway.hl7.models import InboundMessage
from novaza_gateway.hl7.outcome import Outcome, reject
from novaza_gateway.hl7.parser import Hl7Error, ParseError, encode, parse
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.repository import DEAD, FAILED, PROCESSED, QUEUED
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
        message = intake.take(data, accepts, area.config)
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
    return _inbound_out(received)


def _inbound_out(row: InboundMessage) -> MessageOut:
    return MessageOut(
        message_id=row.id,
        direction="inbound",
        message_type=f"{row.message_type}^{row.trigger_event}",
        control_id=row.control_id,
        status=row.status,
        ack_code=row.ack_code,
        created_at=row.received_at,
        last_error=row.error_text,
        error_code=row.error_code,
        patient_id=row.patient_id,
        processed_at=row.processed_at,
        reprocess_count=row.reprocess_count,
        reprocessed_at=row.reprocessed_at,
    )


async def reprocess(
    session: AsyncSession, area: Hl7Area, tenant: TenantContext, actor: Actor, message_id: str
) -> MessageOut:
    """A failed inbound message processed again from its stored bytes, for the tenant's
    current settings, in this request's transaction (ADR 0017). The row is claimed first
    (``failed`` -> ``processing``), so a concurrent reprocess waits and then finds it done.
    The ACK the sender was answered stays as stored; the outcome columns take the new one."""
    if not await repository.claim_failed(session, tenant.id, message_id, utcnow()):
        await _refuse_reprocess(session, tenant, message_id)
    row = await repository.inbound(session, tenant.id, message_id)
    if row is None:  # pragma: no cover - claimed in this transaction
        raise MessageNotFound()
    ctx = Hl7Context(tenant.id, actor, await area.settings.for_tenant(tenant.id))
    patient_id, error = await _process_stored(session, ctx, row)
    row.status = FAILED if error else PROCESSED
    row.error_code = error.code if error else None
    row.error_text = error.text[:255] if error else None
    row.patient_id = patient_id
    row.processed_at = utcnow()
    audit.record(
        session, actor, "hl7.message.reprocess", "hl7_message", row.id,
        tenant_id=tenant.id, patient_id=patient_id,
        outcome="error" if error else "success",
        after={"status": row.status, "errorCode": row.error_code,
               "reprocessCount": row.reprocess_count},
    )  # fmt: skip
    return _inbound_out(row)


async def _process_stored(
    session: AsyncSession, ctx: Hl7Context, row: InboundMessage
) -> tuple[str | None, Hl7Error | None]:
    try:  # it was taken once; a parser grown stricter since records why not now
        message = parse(row.raw)
        intake.check_type(message.header, intake.ANY)
    except ParseError as error:
        return None, error
    received = intake.Received(ctx, row.raw, message, row.channel)
    return await intake.process_stored(session, received, row.id)


async def _refuse_reprocess(
    session: AsyncSession, tenant: TenantContext, message_id: str
) -> NoReturn:
    """Why ``message_id`` cannot be claimed: 409 for this tenant's message, else 404."""
    row = await repository.inbound(session, tenant.id, message_id)
    if row is not None:
        raise Conflict(
            f"Only a failed inbound message can be reprocessed; this one is {row.status}."
        )
    if await repository.outbound(session, tenant.id, message_id) is not None:
        raise Conflict("Only an inbound message can be reprocessed; this one is outbound.")
    raise MessageNotFound()


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
