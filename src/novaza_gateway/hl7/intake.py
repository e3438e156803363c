"""Intake, shared by HTTP and MLLP: messages in, stored and processed, one ACK each.

A group of messages (whatever MLLP connections and HTTP requests queued meanwhile, see
``batcher``; ADR 0016) is stored and processed in the caller's one transaction; the caller
commits and only then sends the ACKs, so an AA always means "on disk and applied" (ADR 0010,
0013).

1. Keys already stored are answered from the store: the original ACK, byte for byte. A later
   twin inside the group is answered like a repeat of the first.
2. What the group will look up is read in a few queries (``clinical.prefetch``).
3. ``isolate=False`` (MLLP groups): each message runs without a SAVEPOINT. Processing checks
   everything before its first change, so an AE leaves nothing to undo. The message rows go
   last, with their outcome and ACK, in one INSERT ... ON CONFLICT DO NOTHING. ``Redo`` asks
   the caller to roll back and run the group with ``isolate=True`` when that cannot hold: a
   message failed after a change all the same (``clinical.changes`` counts), may fail midway
   (a merge, several order steps: the batcher sends such groups straight to ``isolate=True``),
   or a row's key or a clinical key was taken meanwhile.
4. ``isolate=True`` (a redone group, or one with a merge or several order steps): the
   message rows go first (a key a concurrent transaction holds waits for its commit, then is
   answered from the store), each message runs in its SAVEPOINT, and the outcomes and ACKs
   are written to the rows in one UPDATE.
5. An audit record per message, in the same transaction.

``process_stored`` runs one message already stored (a failed one, reprocessed: ADR 0017) the
way a redone group runs each of its messages: its lookups read, then in a SAVEPOINT.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import changes, prefetch, writes
from novaza_gateway.clinical.errors import InvalidTransition, OrderNotFound, PatientNotFound
from novaza_gateway.config import Hl7Config
from novaza_gateway.core import dberrors
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.hl7 import repository
from novaza_gateway.hl7.errors import MessageInFlight
from novaza_gateway.hl7.outcome import Outcome, answered, refused, repeat
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    Header,
    Hl7Error,
    Message,
    ParseError,
    parse,
)
from novaza_gateway.hl7.processing import (
    ADT_EVENTS,
    ORDER_TRIGGERS,
    Hl7Context,
    OrderStep,
    check_order_groups,
    lookups,
    needs_savepoint,
    process_adt,
    process_order,
)
from novaza_gateway.hl7.repository import MessageKey, Processed, StoredMessage

log = logging.getLogger("novaza.hl7")

ADT = frozenset({"ADT"})
ORDERS = frozenset(ORDER_TRIGGERS)
ANY = ADT | ORDERS
# What processing raises for a message the gateway answers AE (nothing else is expected).
ANSWERED_AE = (Hl7Error, OrderNotFound, PatientNotFound, InvalidTransition)


@dataclass(frozen=True, slots=True)
class Received:
    """A message taken for storing: parsed, of a type the channel accepts, tenant known."""

    ctx: Hl7Context
    data: bytes
    message: Message
    channel: str

    @property
    def key(self) -> MessageKey:
        header = self.message.header
        return (
            self.ctx.tenant_id,
            header.sending_application[:180],
            header.sending_facility[:180],
            header.control_id[:199],
        )


# An order message's steps as ``lookups`` read them, by ``id()`` of its ``Received``.
Steps = dict[int, list[OrderStep]]


class Redo(Exception):
    """The group cannot be finished without a SAVEPOINT per message: roll the transaction
    back and run the group again with ``isolate=True``."""


def take(data: bytes, accepts: frozenset[str], config: Hl7Config) -> Message:
    """A message as intake takes it (HTTP and MLLP alike): parsed, of a type ``accepts``
    names, within the size caps. Raises ``ParseError`` (answered AR, nothing stored)."""
    message = parse(data, config.max_segments)
    check_type(message.header, accepts)
    check_order_groups(message, config.max_order_groups)
    return message


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


async def receive_group(
    session: AsyncSession, group: Sequence[Received], *, isolate: bool
) -> list[Outcome]:
    """Store and process ``group`` in the session's transaction; one outcome per message, in
    order. Raises ``Redo`` (only when ``isolate`` is False) or a database error."""
    keys = [received.key for received in group]
    fingerprints = [digest(received.message) for received in group]
    if not isolate:
        await repository.begin_writing(session)
    stored = await repository.inbound_by_keys(session, keys)
    outcomes: dict[int, Outcome] = {}
    rows: dict[int, dict[str, Any]] = {}
    firsts: set[MessageKey] = set()
    now = utcnow()
    for i, received in enumerate(group):
        if keys[i] in stored:
            outcomes[i] = repeat(stored[keys[i]], fingerprints[i], received.message.header)
        elif keys[i] not in firsts:  # a later twin in the group is answered as a repeat
            firsts.add(keys[i])
            rows[i] = _row(received, fingerprints[i], now)
    if isolate:
        taken = await _claim(session, group, rows, stored, outcomes)
    elif any(needs_savepoint(group[i].message, len(group) == 1) for i in rows):
        raise Redo()
    else:
        taken = list(rows)
    done = await _process_all(session, group, taken, [rows[i]["id"] for i in taken], isolate)
    processed = [result for _, result in done.values()]
    if isolate:
        await repository.record_outcomes(session, processed)
    else:  # the rows go last, with their outcome: one INSERT; a key taken meanwhile: redo
        for i, (_, result) in done.items():
            rows[i].update(result.columns())
        inserted = await _write(session, list(rows.values()))
        if len(inserted) != len(rows):
            raise Redo()
    for i, (outcome, result) in done.items():
        outcomes[i] = outcome
        stored[keys[i]] = result.stored(fingerprints[i])
    for i, received in enumerate(group):
        if i not in outcomes:
            outcomes[i] = repeat(stored[keys[i]], fingerprints[i], received.message.header)
    return [outcomes[i] for i in range(len(group))]


async def _claim(
    session: AsyncSession,
    group: Sequence[Received],
    rows: dict[int, dict[str, Any]],
    stored: dict[MessageKey, StoredMessage],
    outcomes: dict[int, Outcome],
) -> list[int]:
    """The rows first (their keys make a concurrent twin wait); a key a concurrent
    transaction committed meanwhile is answered from the store. Answers the rows taken."""
    await repository.begin_writing(session)  # SQLite: a DML before the first SAVEPOINT
    inserted = await _insert_rows(session, group, rows, outcomes)
    lost = [i for i in rows if rows[i]["id"] not in inserted]
    if lost:
        keys = [group[i].key for i in lost]
        stored.update(await repository.inbound_by_keys(session, keys))
        for i, key in zip(lost, keys, strict=True):
            if key not in stored:
                raise MessageInFlight()
            header = group[i].message.header
            outcomes[i] = repeat(stored[key], rows[i]["content_sha256"], header)
    return [i for i in rows if rows[i]["id"] in inserted]


async def _insert_rows(
    session: AsyncSession,
    group: Sequence[Received],
    rows: dict[int, dict[str, Any]],
    outcomes: dict[int, Outcome],
) -> set[str]:
    """The message rows, in a SAVEPOINT. If the store refuses one (a data error), each row
    goes in its own: a refused row's message is answered AR and dropped from ``rows``, the
    others are kept, in the same transaction (ADR 0018)."""
    try:
        async with session.begin_nested():
            return await repository.insert_inbound(session, list(rows.values()))
    except DBAPIError as exc:
        if dberrors.fault(exc) is not dberrors.Fault.DATA:
            raise
    inserted: set[str] = set()
    for i in list(rows):
        try:
            async with session.begin_nested():
                inserted |= await repository.insert_inbound(session, [rows[i]])
        except DBAPIError as exc:
            if dberrors.fault(exc) is not dberrors.Fault.DATA:
                raise
            received = group[i]
            log.warning(
                "hl7 message row refused by the store",
                extra={"error": type(exc).__name__, "tenant": received.ctx.tenant_id},
            )
            outcomes[i] = refused(received.data, received.message.header)
            del rows[i]
    return inserted


def _row(received: Received, fingerprint: str, now: datetime) -> dict[str, Any]:
    header = received.message.header
    tenant_id, sending_application, sending_facility, control_id = received.key
    return {
        "id": new_id(),
        "tenant_id": tenant_id,
        "channel": received.channel,
        "received_at": now,
        "sending_application": sending_application,
        "sending_facility": sending_facility,
        "receiving_application": header.receiving_application[:180],
        "receiving_facility": header.receiving_facility[:180],
        "message_type": header.message_type.code[:8],
        "trigger_event": header.message_type.trigger[:8],
        "version": header.version,
        "control_id": control_id,
        "content_sha256": fingerprint,
        "raw": received.data,
        **Processed.received(),
        "reprocess_count": 0,
        "reprocessed_at": None,
    }


async def _process_all(
    session: AsyncSession,
    group: Sequence[Received],
    taken: list[int],
    message_ids: list[str],
    isolate: bool,
) -> dict[int, tuple[Outcome, Processed]]:
    done: dict[int, tuple[Outcome, Processed]] = {}
    if not isolate:  # new rows and audit records: one INSERT per table at the end
        writes.buffer(session)
    steps: Steps = {}
    await _prefetch(session, [group[i] for i in taken], steps)
    for n, (i, message_id) in enumerate(zip(taken, message_ids, strict=True)):
        received = group[i]
        if isolate:
            patient_id, error = await _isolated(session, received, message_id, steps)
        else:
            if prefetch.snapshot(session, received.ctx.tenant_id) is None:  # forgotten
                await _prefetch(session, [group[j] for j in taken[n:]], steps)
            patient_id, error = await _unisolated(session, received, steps)
        done[i] = _conclude(session, received, message_id, patient_id, error)
    return done


async def process_stored(
    session: AsyncSession, received: Received, message_id: str
) -> tuple[str | None, Hl7Error | None]:
    """One stored message processed again in the session's transaction, as a redone group
    processes each of its messages (lookups, then a SAVEPOINT): the patient id, or the error
    to record (nothing the message did is kept). The caller owns the row and writes the
    outcome; no ACK is built and no ``hl7.<type>.<event>`` audit record written."""
    steps: Steps = {}
    try:
        await _prefetch(session, [received], steps)
        return await _isolated(session, received, message_id, steps)
    finally:
        prefetch.forget(session)


async def _write(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
    """A group run without SAVEPOINTs ends here: its new clinical rows and audit records and
    the message rows (on PostgreSQL one statement), then the ORM's changes to loaded rows.
    Answers the message rows inserted (a key taken meanwhile is not)."""
    try:
        inserted = await repository.insert_inbound(session, rows, before=writes.take(session))
        await session.flush()
    except IntegrityError as exc:  # a concurrent transaction inserted what we did
        raise Redo() from exc
    return inserted


async def _prefetch(session: AsyncSession, group: Sequence[Received], steps: Steps) -> None:
    """Read what ``group`` will look up; note each order message's steps in ``steps``."""
    by_tenant: dict[str, prefetch.Keys] = {}
    for received in group:
        keys = by_tenant.setdefault(received.ctx.tenant_id, prefetch.Keys())
        read = lookups(received.message, received.ctx.settings, keys)
        if read is not None:
            steps[id(received)] = read
    for tenant_id, keys in by_tenant.items():
        await prefetch.load(session, tenant_id, keys)


async def _process(session: AsyncSession, received: Received, steps: Steps) -> str | None:
    if received.message.header.message_type.code == "ADT":
        return await process_adt(session, received.ctx, received.message)
    read = steps.get(id(received))
    return await process_order(session, received.ctx, received.message, read)


async def _unisolated(
    session: AsyncSession, received: Received, steps: Steps
) -> tuple[str | None, Hl7Error | None]:
    new_before, kept_before = len(session.new), writes.count(session)
    with changes.watch() as changed:
        try:
            return await _process(session, received, steps), None
        except ANSWERED_AE as exc:
            if (
                changed.count
                or len(session.new) != new_before
                or writes.count(session) != kept_before
            ):
                raise Redo() from exc  # it failed after a change: only a SAVEPOINT undoes it
            return None, _as_hl7(exc)
        except IntegrityError as exc:
            raise Redo() from exc
        except DBAPIError:
            raise
        except Exception as exc:  # a bug: the isolated run answers AE and logs it
            raise Redo() from exc


async def _isolated(
    session: AsyncSession, received: Received, message_id: str, steps: Steps
) -> tuple[str | None, Hl7Error | None]:
    """In a SAVEPOINT. A unique conflict means a concurrent message created the same patient,
    visit or order and has committed (the database made us wait for it): once more. Values
    the store refuses (a data error: too long, a character it cannot hold) are this
    message's fault: AE, the others of the group go on (ADR 0018). The store unavailable, or
    an unexpected database error: raised (the batcher decides)."""
    for attempt in range(2):
        try:
            async with session.begin_nested():
                return await _process(session, received, steps), None
        except DBAPIError as exc:
            if dberrors.fault(exc) is not dberrors.Fault.DATA:
                raise
            prefetch.forget(session)
            conflict = dberrors.unique_violation(exc)
            if not attempt and conflict:
                continue
            _log_failure(type(exc).__name__, received, message_id)
            return None, Hl7Error(
                "The message conflicts with records stored meanwhile."
                if conflict
                else "The store refused a value of the message."
            )
        except ANSWERED_AE as exc:
            prefetch.forget(session)
            return None, _as_hl7(exc)
        except Exception as exc:  # a bug: keep the message, answer AE, never its content in logs
            prefetch.forget(session)
            _log_failure(type(exc).__name__, received, message_id)
            return None, Hl7Error("The gateway failed to process the message.")
    raise AssertionError("unreachable")  # pragma: no cover


def _log_failure(error: str, received: Received, message_id: str) -> None:
    log.error(
        "hl7 processing failed",
        extra={"error": error, "tenant": received.ctx.tenant_id, "messageId": message_id},
    )


def _as_hl7(exc: Hl7Error | OrderNotFound | PatientNotFound | InvalidTransition) -> Hl7Error:
    if isinstance(exc, Hl7Error):
        return exc
    if isinstance(exc, OrderNotFound | PatientNotFound):
        return Hl7Error(exc.message, code=UNKNOWN_KEY_IDENTIFIER)
    return Hl7Error(exc.message, code=APPLICATION_INTERNAL_ERROR)


def _conclude(
    session: AsyncSession,
    received: Received,
    message_id: str,
    patient_id: str | None,
    error: Hl7Error | None,
) -> tuple[Outcome, Processed]:
    header = received.message.header
    code = "AE" if error else "AA"
    outcome = answered(header, code, message_id, error)
    processed = Processed(
        tenant_id=received.ctx.tenant_id,
        message_id=message_id,
        status="failed" if error else "processed",
        ack_code=code,
        ack=outcome.ack.data,
        error_code=error.code if error else None,
        error_text=error.text[:255] if error else None,
        patient_id=patient_id,
        processed_at=utcnow(),
    )
    writes.audit(
        session,
        received.ctx.actor,
        f"hl7.{header.message_type.code}.{header.message_type.trigger}".lower(),
        "hl7_message",
        message_id,
        tenant_id=received.ctx.tenant_id,
        patient_id=patient_id,
        outcome="success" if error is None else "error",
        after={"ack": code, "controlId": header.control_id[:64]},
    )
    return outcome, processed
