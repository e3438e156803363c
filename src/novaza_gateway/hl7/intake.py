"""Intake, shared by HTTP and MLLP: one message in, stored and processed, one ACK out.

The message row is written first; processing runs in a SAVEPOINT, so an AE keeps the raw
message (and the ACK sent) while undoing whatever the message had half done. The caller's
transaction commits the row, the clinical changes and the audit record together, and only
then is the ACK sent: an AA always means "on disk and applied".
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical.errors import InvalidTransition, OrderNotFound, PatientNotFound
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.hl7 import repository
from novaza_gateway.hl7.ack import Ack, build_ack
from novaza_gateway.hl7.errors import MessageInFlight
from novaza_gateway.hl7.models import InboundMessage
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    Header,
    Hl7Error,
    Message,
    ParseError,
    codec_for,
    parse,
    peek,
)
from novaza_gateway.hl7.processing import (
    ADT_EVENTS,
    ORDER_TRIGGERS,
    Hl7Context,
    process_adt,
    process_order,
)

log = logging.getLogger("novaza.hl7")

ADT = frozenset({"ADT"})
ORDERS = frozenset(ORDER_TRIGGERS)
ANY = ADT | ORDERS


@dataclass(frozen=True, slots=True)
class Outcome:
    ack: Ack
    header: Header | None
    message_id: str | None = None
    duplicate: bool = False
    error: Hl7Error | None = None


def new_control_id() -> str:
    return uuid.uuid4().hex[:20]


def reject(data: bytes, error: Hl7Error, header: Header | None = None) -> Outcome:
    """AR for a message that is not taken at all (nothing stored)."""
    header = header or peek(data)
    ack = build_ack(header, "AR", control_id=new_control_id(), now=utcnow(), error=error)
    return Outcome(ack=ack, header=header, error=error)


def check_type(header: Header, accepts: frozenset[str]) -> None:
    kind, trigger = header.message_type.code, header.message_type.trigger
    if kind not in accepts:
        raise ParseError(
            f"{kind[:8]} messages are not accepted here.",
            code=UNSUPPORTED_MESSAGE_TYPE,
            segment="MSH",
            sequence=1,
            field=9,
        )
    supported = trigger in ADT_EVENTS if kind == "ADT" else trigger == ORDER_TRIGGERS[kind]
    if not supported:
        raise ParseError(
            f"Event {trigger[:8]} of {kind} is not supported.",
            code=UNSUPPORTED_EVENT_CODE,
            segment="MSH",
            sequence=1,
            field=9,
        )


def digest(message: Message) -> str:
    """The content fingerprint: the same segments whatever the line endings or MLLP framing."""
    canonical = "\r".join(s.separators.field.join(s.fields) for s in message.segments)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def receive(
    session: AsyncSession,
    ctx: Hl7Context,
    data: bytes,
    *,
    channel: str,
    accepts: frozenset[str] = ANY,
    parsed: Message | None = None,
) -> Outcome:
    """``parsed``: the message already parsed (and type-checked) by the caller."""
    try:
        message = parsed or parse(data)
        check_type(message.header, accepts)
    except ParseError as error:
        return reject(data, error)
    header = message.header
    fingerprint = digest(message)
    key = (header.sending_application[:180], header.sending_facility[:180], header.control_id[:199])
    existing = await repository.inbound_by_key(session, ctx.tenant_id, *key)
    if existing is not None:
        return _repeat(existing, fingerprint, header)
    row = InboundMessage(
        id=uuid.uuid4().hex,
        tenant_id=ctx.tenant_id,
        channel=channel,
        received_at=utcnow(),
        sending_application=key[0],
        sending_facility=key[1],
        receiving_application=header.receiving_application[:180],
        receiving_facility=header.receiving_facility[:180],
        message_type=header.message_type.code[:8],
        trigger_event=header.message_type.trigger[:8],
        version=header.version,
        control_id=key[2],
        content_sha256=fingerprint,
        raw=data,
        status="received",
    )
    # The row goes first: its unique key makes a concurrent twin wait here (then 409/retry)
    # instead of racing through processing; and pysqlite needs a DML before the SAVEPOINT.
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:  # the same key committed by a concurrent request
        raise MessageInFlight() from None
    return await _process(session, ctx, message, row)


async def _process(
    session: AsyncSession, ctx: Hl7Context, message: Message, row: InboundMessage
) -> Outcome:
    header = message.header
    error: Hl7Error | None = None
    patient_id: str | None = None
    try:
        patient_id = await _apply(session, ctx, message)
    except Hl7Error as exc:
        error = exc
    except (OrderNotFound, PatientNotFound) as exc:
        error = Hl7Error(exc.message, code=UNKNOWN_KEY_IDENTIFIER)
    except InvalidTransition as exc:
        error = Hl7Error(exc.message, code=APPLICATION_INTERNAL_ERROR)
    except DBAPIError:
        raise
    except Exception as exc:  # a bug: keep the message, answer AE, never its content in logs
        log.error(
            "hl7 processing failed",
            extra={"error": type(exc).__name__, "tenant": ctx.tenant_id, "messageId": row.id},
        )
        error = Hl7Error("The gateway failed to process the message.")
    code = "AE" if error else "AA"
    ack = build_ack(header, code, control_id=new_control_id(), now=utcnow(), error=error)
    row.status = "failed" if error else "processed"
    row.ack_code = code
    row.ack = ack.data
    row.error_code = error.code if error else None
    row.error_text = error.text[:255] if error else None
    row.patient_id = patient_id
    row.processed_at = utcnow()
    audit.record(
        session,
        ctx.actor,
        f"hl7.{header.message_type.code}.{header.message_type.trigger}".lower(),
        "hl7_message",
        row.id,
        tenant_id=ctx.tenant_id,
        patient_id=patient_id,
        outcome="success" if error is None else "error",
        after={"ack": code, "controlId": header.control_id[:64]},
    )
    return Outcome(ack=ack, header=header, message_id=row.id, error=error)


async def _apply(session: AsyncSession, ctx: Hl7Context, message: Message) -> str | None:
    """Process in a SAVEPOINT. A unique conflict means a concurrent message created the same
    patient, visit or order and has committed (the database made us wait for it): once more."""
    for attempt in range(2):
        try:
            async with session.begin_nested():
                if message.header.message_type.code == "ADT":
                    return await process_adt(session, ctx, message)
                return await process_order(session, ctx, message)
        except IntegrityError:
            if attempt:
                raise
    return None  # pragma: no cover


def _repeat(existing: InboundMessage, fingerprint: str, header: Header) -> Outcome:
    if existing.content_sha256 == fingerprint and existing.ack is not None:
        code = existing.ack_code or "AA"
        error = None
        if code != "AA":
            error = Hl7Error(existing.error_text or "", code=existing.error_code or "207", ack=code)
        text = existing.ack.decode(codec_for(header.charset), errors="replace")
        ack = Ack(code=code, text=text, data=existing.ack)
        return Outcome(ack=ack, header=header, message_id=existing.id, duplicate=True, error=error)
    error = Hl7Error(
        "A different message with this sender and control id was already received.",
        code=DUPLICATE_KEY_IDENTIFIER,
        segment="MSH",
        sequence=1,
        field=10,
    )
    ack = build_ack(header, "AE", control_id=new_control_id(), now=utcnow(), error=error)
    return Outcome(ack=ack, header=header, message_id=existing.id, error=error)
