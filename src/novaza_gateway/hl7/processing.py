"""What ADT and ORM messages do to the clinical records.

Each handler answers the id of the patient the message touched; an ``Hl7Error`` is answered
AE (nothing the message did is kept), and so is a clinical error (unknown order, a move the
record's state does not allow).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import encounters, orders, patients, prefetch
from novaza_gateway.clinical.encounters import EncounterEvent, Visit
from novaza_gateway.clinical.models import Patient
from novaza_gateway.clinical.orders import ProcedureRequest
from novaza_gateway.clinical.patients import Identifier
from novaza_gateway.core.audit import Actor
from novaza_gateway.hl7 import segments
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY_IDENTIFIER,
    Hl7Error,
    Message,
    ParseError,
    Segment,
)
from novaza_gateway.hl7.settings import Hl7Settings


@dataclass(frozen=True, slots=True)
class Hl7Context:
    tenant_id: str
    actor: Actor
    settings: Hl7Settings


ADT_EVENTS: dict[str, EncounterEvent | None] = {
    "A01": EncounterEvent.ADMIT,
    "A04": EncounterEvent.REGISTER,
    "A05": EncounterEvent.PREADMIT,
    "A08": EncounterEvent.UPDATE,
    "A02": EncounterEvent.TRANSFER,
    "A03": EncounterEvent.DISCHARGE,
    "A11": EncounterEvent.CANCEL_ADMIT,
    "A12": EncounterEvent.CANCEL_TRANSFER,
    "A13": EncounterEvent.CANCEL_DISCHARGE,
    "A28": None,
    "A31": None,
    "A40": None,
}
# Events that may come without a visit number: the patient is still registered or updated.
_VISIT_OPTIONAL = frozenset({EncounterEvent.REGISTER, EncounterEvent.UPDATE})
ORDER_TRIGGERS = {"ORM": "O01", "OMI": "O23"}
# ORC-5 order status (HL7 table 0038) -> worklist status, for SC.
ORDER_STATUS = {
    "SC": orders.SCHEDULED,
    "IP": orders.IN_PROGRESS,
    "A": orders.IN_PROGRESS,
    "CM": orders.COMPLETED,
    "CA": orders.CANCELED,
    "DC": orders.DISCONTINUED,
}


def needs_savepoint(message: Message, alone: bool = False) -> bool:
    """A message that may fail after its first change: a merge (bulk moves), or an order
    message with several steps (ORCs, OBRs): a later one may fail after an earlier one.
    ``alone`` in its group, the order message does not: a step failing after an earlier
    one's change redoes its one-message group with the SAVEPOINT (ADR 0019)."""
    kind, trigger = message.header.message_type.code, message.header.message_type.trigger
    if kind == "ADT":
        return trigger == "A40"
    return not alone and len(_order_groups(message)) > 1


def order_steps(message: Message) -> int:
    """How many order steps a message holds, counted cheaply (its ORCs, or OBRs if more)."""
    if message.header.message_type.code == "ADT":
        return 0
    orcs = obrs = 0
    for segment in message.segments:
        orcs += segment.name == "ORC"
        obrs += segment.name == "OBR"
    return max(orcs, obrs)


def check_order_groups(message: Message, limit: int) -> None:
    """At most ``limit`` order steps (an ORC with each of its OBRs) in an order message: the
    work one message may cost the group commit it shares (ADR 0019). Past it: AR, naming
    the first step past the limit."""
    if message.header.message_type.code == "ADT":
        return
    groups = _order_groups(message)
    if len(groups) > limit:
        first = groups[limit].obr or groups[limit].orc
        raise ParseError(
            f"The message has {len(groups)} order steps (ORC/OBR); at most {limit} are accepted.",
            code=APPLICATION_INTERNAL_ERROR,
            segment=first.name,
            sequence=first.sequence,
        )


def lookups(message: Message, settings: Hl7Settings, keys: prefetch.Keys) -> list[OrderStep] | None:
    """Add to ``keys`` what processing ``message`` will look up (best effort: a segment
    that does not read is left out, and its message answered AE when processed). Answers an
    order message's steps, read once for ``process_order`` too (None: read them then)."""
    with contextlib.suppress(Hl7Error):
        pid = message.segment("PID")
        if pid is not None:
            keys.identifiers.update(
                (i.authority, i.value) for i in segments.patient_identifiers(pid)
            )
        if message.header.message_type.code == "ADT":
            mrg = message.segment("MRG")
            if mrg is not None:
                keys.identifiers.update(
                    (i.authority, i.value) for i in segments.identifiers(mrg, 1)
                )
            pv1 = message.segment("PV1")
            visit = segments.visit(pv1) if pv1 is not None else None
            if visit is not None:
                keys.visits.add(visit.visit_number)
            return None
        steps = _order_steps(message, settings)
        for step in steps:
            request = step.request
            if request.placer_order_number:
                keys.placers.add(request.placer_order_number)
            if step.control == "NW":  # a new order: is its accession taken?
                keys.accessions.add(orders.accession_for(request, step.step))
            elif request.filler_order_number:  # a control finds its order by either number
                keys.fillers.add(request.filler_order_number)
        return steps
    return None


async def process_adt(session: AsyncSession, ctx: Hl7Context, message: Message) -> str:
    """Everything is read and checked first; the first change comes after the last check."""
    trigger = message.header.message_type.trigger
    event = ADT_EVENTS[trigger]
    pid = segments.required_segment(message, "PID")
    data = segments.patient(pid)
    prior: list[Identifier] | None = None
    visit: Visit | None = None
    if trigger == "A40":
        mrg = segments.required_segment(message, "MRG")
        prior = segments.identifiers(mrg, 1)
        if not prior:
            raise segments.missing(mrg, 1, "prior patient identifier list")
    elif event is not None:
        pv1 = message.segment("PV1")
        visit = segments.visit(pv1) if pv1 is not None else None
        if visit is None and event not in _VISIT_OPTIONAL:
            where = pv1 or Segment("PV1", [], message.header.separators, 0)
            raise segments.missing(where, 19, "visit number")
        if visit is not None:
            await encounters.check_event(session, ctx.tenant_id, visit, event)
    patient, _ = await patients.register(session, ctx.actor, ctx.tenant_id, data)
    if prior is not None:
        await patients.merge(session, ctx.actor, ctx.tenant_id, patient, prior)
    elif visit is not None and event is not None:
        await encounters.apply_event(session, ctx.actor, ctx.tenant_id, patient, visit, event)
    return patient.id


@dataclass(frozen=True, slots=True)
class OrderStep:
    control: str
    request: ProcedureRequest
    status: str | None  # the target status of CA, DC, SC
    step: int  # the n-th OBR of its ORC
    several: bool  # its ORC has several OBRs: a change or status names one procedure

    @property
    def named(self) -> int | None:
        return self.step if self.several else None


async def process_order(
    session: AsyncSession,
    ctx: Hl7Context,
    message: Message,
    steps: list[OrderStep] | None = None,
) -> str | None:
    """ORM^O01 / OMI^O23: each ORC is one order control, applied to each of its OBRs (with
    TQ1, IPC): several OBRs are several procedures of one order, each its own worklist item.
    Every step is read and checked before the first is applied. ``steps``: the message's,
    already read (``lookups``)."""
    pid = segments.required_segment(message, "PID")
    if steps is None:
        steps = _order_steps(message, ctx.settings)
    patient_id: str | None = None
    patient: Patient | None = None  # one PID: read and found once, whatever the steps
    for step in steps:
        tenant_id, request = ctx.tenant_id, step.request
        if step.control == "NW":
            await orders.check_place(session, tenant_id, request, step.step)
            patient = patient or await _order_patient(session, ctx, pid)
            item, _ = await orders.place(session, ctx.actor, tenant_id, patient, request, step.step)
        elif step.status is None:  # XO
            item = await orders.change(session, ctx.actor, tenant_id, request, step.named)
        else:
            item = await orders.set_status(
                session, ctx.actor, tenant_id, request, step.status, step.named
            )
        patient_id = item.patient_id
    return patient_id


def _order_steps(message: Message, settings: Hl7Settings) -> list[OrderStep]:
    groups = _order_groups(message)
    if not groups:
        raise Hl7Error(
            "The message has no ORC segment.", code=SEGMENT_SEQUENCE_ERROR, segment="ORC"
        )
    steps: list[OrderStep] = []
    for group in groups:
        orc = group.orc
        request = segments.procedure(orc, group.obr, group.tq1, group.ipc, settings)
        control = orc.get(1).upper()
        status: str | None = None
        if control in ("CA", "OC"):
            status = orders.CANCELED
        elif control in ("DC", "OD"):
            status = orders.DISCONTINUED
        elif control == "SC":
            status = ORDER_STATUS.get(orc.get(5).upper())
            if status is None:
                raise _table_error(orc, 5, "order status")
        elif control not in ("NW", "XO"):
            raise _table_error(orc, 1, "order control")
        steps.append(OrderStep(control, request, status, group.step, group.several))
    return steps


async def _order_patient(session: AsyncSession, ctx: Hl7Context, pid: Segment) -> Patient:
    data = segments.patient(pid)
    found = await patients.find(session, ctx.tenant_id, data.identifiers)
    if found is not None:
        return found
    if not ctx.settings.register_unknown_patients:
        raise Hl7Error(
            "The order is for a patient the gateway does not know.",
            code=UNKNOWN_KEY_IDENTIFIER,
            segment="PID",
            sequence=pid.sequence,
            field=3,
        )
    patient, _ = await patients.register(session, ctx.actor, ctx.tenant_id, data)
    return patient


def _table_error(segment: Segment, index: int, what: str) -> Hl7Error:
    return Hl7Error(
        f"{segment.name}-{index} holds an {what} this gateway does not support.",
        code=TABLE_VALUE_NOT_FOUND,
        segment=segment.name,
        sequence=segment.sequence,
        field=index,
    )


@dataclass(slots=True)
class OrderGroup:
    """One ORC with one of its OBRs (the ``step``-th), the ORC's TQ1 and the OBR's IPC."""

    orc: Segment
    obr: Segment | None = None
    tq1: Segment | None = None
    ipc: Segment | None = None
    step: int = 1
    several: bool = False


def _order_groups(message: Message) -> list[OrderGroup]:
    groups: list[OrderGroup] = []
    for segment in message.segments:
        if segment.name == "ORC":
            groups.append(OrderGroup(segment))
        elif not groups:
            continue
        elif segment.name == "OBR" and groups[-1].obr is not None:  # the ORC's next procedure
            last = groups[-1]
            last.several = True
            groups.append(OrderGroup(last.orc, segment, last.tq1, None, last.step + 1, True))
        elif segment.name in ("OBR", "TQ1", "IPC"):
            attr = segment.name.lower()
            if getattr(groups[-1], attr) is None:
                setattr(groups[-1], attr, segment)
    several = {id(g.orc) for g in groups if g.several}  # one pass: a big message is linear
    for group in groups:  # the first procedure learns of the others too
        group.several = id(group.orc) in several
    return groups
