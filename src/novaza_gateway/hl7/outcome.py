"""What intake answers for one message: the ACK, and what it says about the message."""

from __future__ import annotations

from dataclasses import dataclass

from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.hl7.ack import Ack, build_ack, read_ack
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    Header,
    Hl7Error,
    ParseError,
    codec_for,
    peek,
)
from novaza_gateway.hl7.repository import StoredMessage


@dataclass(frozen=True, slots=True)
class Outcome:
    ack: Ack
    header: Header | None
    message_id: str | None = None
    duplicate: bool = False
    error: Hl7Error | None = None


def new_control_id() -> str:
    return new_id()[:20]


def reject(data: bytes, error: Hl7Error, header: Header | None = None) -> Outcome:
    """AR for a message that is not taken at all (nothing stored)."""
    header = header or peek(data)
    ack = build_ack(header, "AR", control_id=new_control_id(), now=utcnow(), error=error)
    return Outcome(ack=ack, header=header, error=error)


def refused(data: bytes, header: Header) -> Outcome:
    """AR for a message the store refused even in a transaction of its own (ADR 0018):
    nothing of it is stored, so it is answered as not taken."""
    error = Hl7Error(
        "The store refused a value of the message; it was not stored.",
        code=APPLICATION_INTERNAL_ERROR,
        ack="AR",
    )
    return reject(data, error, header)


def answered(header: Header, code: str, message_id: str, error: Hl7Error | None) -> Outcome:
    """A stored message's own ACK (AA, or AE with ``error``)."""
    ack = build_ack(header, code, control_id=new_control_id(), now=utcnow(), error=error)
    return Outcome(ack=ack, header=header, message_id=message_id, error=error)


def repeat(stored: StoredMessage, fingerprint: str, header: Header) -> Outcome:
    """A message whose key is stored: the same content gets the original ACK byte for byte
    (and is not processed again); other content with the same key is AE 205."""
    if stored.content_sha256 == fingerprint and stored.ack is not None:
        code = stored.ack_code or "AA"
        error = None if code == "AA" else _sent_error(stored, code)
        text = stored.ack.decode(codec_for(header.charset), errors="replace")
        ack = Ack(code=code, text=text, data=stored.ack)
        return Outcome(ack=ack, header=header, message_id=stored.id, duplicate=True, error=error)
    error = Hl7Error(
        "A different message with this sender and control id was already received.",
        code=DUPLICATE_KEY_IDENTIFIER,
        segment="MSH",
        sequence=1,
        field=10,
    )
    ack = build_ack(header, "AE", control_id=new_control_id(), now=utcnow(), error=error)
    return Outcome(ack=ack, header=header, message_id=stored.id, error=error)


def _sent_error(stored: StoredMessage, code: str) -> Hl7Error:
    """The error the stored ACK reported, read from the ACK itself: a reprocessed message's
    error columns hold its latest outcome, not what the sender was answered (ADR 0017)."""
    assert stored.ack is not None
    try:
        sent = read_ack(stored.ack)
    except ParseError:
        sent = None
    if sent is not None and sent.error_code:
        return Hl7Error(sent.text, code=sent.error_code, ack=code)
    return Hl7Error(stored.error_text or "", code=stored.error_code or "207", ack=code)
