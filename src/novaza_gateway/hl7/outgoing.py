"""Queueing an ORU: resolve patient and order, build (or take) the ORU^R01, store it."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import patients
from novaza_gateway.clinical import repository as clinical
from novaza_gateway.clinical.errors import OrderNotFound, PatientNotFound
from novaza_gateway.clinical.models import Patient
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.errors import Conflict, ValidationFailed
from novaza_gateway.core.ids import new_id
from novaza_gateway.hl7.errors import DestinationUnknown
from novaza_gateway.hl7.mllp import FRAMING_CHARACTERS
from novaza_gateway.hl7.models import OutboundMessage
from novaza_gateway.hl7.oru import (
    Coded,
    Observation,
    Result,
    ResultOrder,
    ResultPatient,
    build_oru,
)
from novaza_gateway.hl7.parser import ParseError, encode, parse
from novaza_gateway.hl7.repository import QUEUED
from novaza_gateway.hl7.schemas import CodedIn, ObservationIn, PatientRef, SendOruIn
from novaza_gateway.hl7.settings import Hl7Settings


def destination_for(settings: Hl7Settings, requested: str | None) -> str:
    name = requested or settings.default_destination
    if not name or name not in settings.destinations:
        raise DestinationUnknown()
    return name


async def queue_oru(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    settings: Hl7Settings,
    body: SendOruIn,
) -> OutboundMessage:
    destination = destination_for(settings, body.destination)
    if body.message is not None:
        raw, control_id, patient_key, patient_id = _ready_made(body.message)
    else:
        raw, control_id, patient_key, patient_id = await _built(
            session, tenant_id, settings, destination, body
        )
    now = utcnow()
    row = OutboundMessage(
        id=new_id(),
        tenant_id=tenant_id,
        created_at=now,
        updated_at=now,
        message_type="ORU^R01",
        control_id=control_id,
        destination=destination,
        patient_key=patient_key[:128],
        patient_id=patient_id,
        raw=raw,
        status=QUEUED,
        attempts=0,
        next_attempt_at=now,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("An ORU with this control id (MSH-10) is already queued.") from None
    audit.record(
        session,
        actor,
        "hl7.oru.queue",
        "hl7_message",
        row.id,
        tenant_id=tenant_id,
        patient_id=patient_id,
        after={"destination": destination, "controlId": control_id},
    )
    return row


def _ready_made(message: str) -> tuple[bytes, str, str, str | None]:
    if any(c in message for c in FRAMING_CHARACTERS):  # would split the frame at the receiver
        raise ValidationFailed.field("message", "must not hold 0x0B, 0x1C or 0x1D (MLLP framing)")
    try:
        parsed = parse(message)
    except ParseError as exc:
        raise ValidationFailed.field("message", exc.text) from None
    kind = parsed.header.message_type
    if (kind.code, kind.trigger) != ("ORU", "R01"):
        raise ValidationFailed.field("message", "must be an ORU^R01")
    pid = parsed.segment("PID")
    key = pid.get(3) if pid is not None else ""
    return encode(parsed.text), parsed.header.control_id[:64], f"pid:{key}", None


async def _built(
    session: AsyncSession,
    tenant_id: str,
    settings: Hl7Settings,
    destination: str,
    body: SendOruIn,
) -> tuple[bytes, str, str, str | None]:
    assert body.patient is not None and body.order is not None
    patient = await _patient(session, tenant_id, body.patient)
    item = await clinical.worklist_item(session, tenant_id, body.order.accession_number)
    if item is None:
        raise OrderNotFound("No order has this accession number.")
    owner = await patients.resolve(session, tenant_id, item.patient_id)
    if owner is None or owner.id != patient.id:
        raise ValidationFailed.field("order", "the order belongs to another patient")
    identifiers = await clinical.identifiers_of(session, tenant_id, patient.id)
    observations = [_observation(o) for o in body.observations]
    if body.order.study_instance_uid:
        uid = Coded("113014", "Study Instance UID", "DCM")
        observations.append(Observation(uid, "ST", body.order.study_instance_uid))
    target = settings.destinations[destination]
    control_id = new_id()[:20]
    result = Result(
        sending_application=settings.sending_application,
        sending_facility=settings.sending_facility,
        receiving_application=target.receiving_application,
        receiving_facility=target.receiving_facility,
        control_id=control_id,
        patient=ResultPatient(
            identifiers=[(i.value, i.assigning_authority) for i in identifiers],
            family_name=patient.family_name,
            given_name=patient.given_name,
            middle_name=patient.middle_name,
            birth_date=patient.birth_date,
            sex=patient.sex,
        ),
        order=ResultOrder(
            placer_order_number=item.placer_order_number,
            filler_order_number=item.filler_order_number,
            accession_number=item.accession_number,
            procedure=Coded(
                item.requested_procedure_code,
                item.requested_procedure_description,
                item.requested_procedure_scheme,
            ),
        ),
        result_status=body.result_status,
        observed_at=utcnow(),
        observations=observations,
        report_text=body.report_text or "",
    )
    raw = build_oru(result, utcnow()).encode("utf-8")
    return raw, control_id, f"patient:{patient.id}", patient.id


async def _patient(session: AsyncSession, tenant_id: str, ref: PatientRef) -> Patient:
    found: Patient | None = None
    if ref.id:
        found = await patients.resolve(session, tenant_id, ref.id)
    elif ref.identifier:
        ident = patients.Identifier(ref.identifier, ref.assigning_authority)
        found = await patients.find(session, tenant_id, [ident])
    if found is None:
        raise PatientNotFound()
    return found


def _observation(obs: ObservationIn) -> Observation:
    value: str | Coded
    if isinstance(obs.value, CodedIn):
        value = Coded(obs.value.code, obs.value.text, obs.value.coding_system)
    elif isinstance(obs.value, float):
        value = f"{obs.value:g}"
    else:
        value = obs.value
    return Observation(
        code=Coded(obs.code, obs.text, obs.coding_system),
        value_type=obs.value_type,
        value=value,
        units=obs.units,
        reference_range=obs.reference_range,
        abnormal_flag=obs.abnormal_flag,
        status=obs.status,
    )
