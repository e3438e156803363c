"""The modality worklist as the imaging area reads it: one query for both readers.

The REST list (``GET /med/imaging/worklist``) and the DICOM MWL SCP (C-FIND) turn their
requests into a ``WorklistFilter`` and call ``read()``: the same items for the same filter,
each read audited. Items live in the shared ``clinical`` package (HL7 orders fill them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import patients, repository
from novaza_gateway.clinical.models import Patient, PatientIdentifier, WorklistItem
from novaza_gateway.clinical.orders import IN_PROGRESS, SCHEDULED
from novaza_gateway.clinical.repository import WorklistQuery
from novaza_gateway.core import audit

OPEN: tuple[str, ...] = (SCHEDULED, IN_PROGRESS)
MAX_NAMED_PATIENTS = 1000  # a patient-name filter narrows to at most this many patients
MAX_AUDITED_ITEMS = 100


@dataclass(frozen=True, slots=True)
class WorklistFilter:
    """What a reader asks for; ``None`` matches anything. Text values may hold DICOM
    wildcards (``*``, ``?``). ``patient_id`` is the gateway's patient id or a patient
    identifier (MRN, the DICOM Patient ID), optionally under ``issuer``."""

    statuses: tuple[str, ...] = OPEN
    modality: str | None = None
    station_ae_title: str | None = None
    start_from: datetime | None = None  # inclusive
    start_to: datetime | None = None  # exclusive
    accession_number: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = None
    issuer: str | None = None
    patient_name: str | None = None  # DICOM PN: Family^Given, wildcards allowed


@dataclass(frozen=True, slots=True)
class PatientRef:
    """The patient of an item: the gateway's id and the identifier modalities see."""

    id: str
    identifier: str
    issuer: str
    family_name: str
    given_name: str
    middle_name: str
    birth_date: date | None
    sex: str

    @property
    def dicom_name(self) -> str:
        return "^".join((self.family_name, self.given_name, self.middle_name)).rstrip("^")


@dataclass(frozen=True, slots=True)
class WorklistEntry:
    """One scheduled procedure step with its patient, as plain values (safe across threads)."""

    id: str
    accession_number: str
    study_instance_uid: str
    status: str
    placer_order_number: str
    filler_order_number: str
    requested_procedure_id: str
    requested_procedure_code: str
    requested_procedure_scheme: str
    requested_procedure_description: str
    scheduled_procedure_step_id: str
    modality: str
    station_ae_title: str
    scheduled_start: datetime | None
    description: str
    reason: str
    ordering_provider: str
    patient: PatientRef


async def read(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    wanted: WorklistFilter,
    *,
    channel: str,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[WorklistEntry]:
    """The items matching ``wanted`` by scheduled start, then id; the read is audited."""
    entries = await find(session, tenant_id, wanted, after=after, limit=limit)
    record_read(session, actor, tenant_id, entries, channel=channel)
    return entries


def record_read(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    entries: Sequence[WorklistEntry],
    *,
    channel: str,
) -> None:
    """``imaging.worklist``: who read which items (the patient when all share one)."""
    shown = {entry.patient.id for entry in entries}
    audit.record(
        session,
        actor,
        "imaging.worklist",
        "worklist",
        None,
        tenant_id=tenant_id,
        patient_id=shown.pop() if len(shown) == 1 else None,
        after={
            "channel": channel,
            "results": len(entries),
            "accessionNumbers": [e.accession_number for e in entries[:MAX_AUDITED_ITEMS]],
        },
    )


async def find(
    session: AsyncSession,
    tenant_id: str,
    wanted: WorklistFilter,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[WorklistEntry]:
    patient_ids = await _patient_ids(session, tenant_id, wanted)
    if patient_ids is not None and not patient_ids:
        return []
    query = WorklistQuery(
        statuses=wanted.statuses,
        modality=wanted.modality,
        station_ae_title=wanted.station_ae_title,
        start_from=wanted.start_from,
        start_to=wanted.start_to,
        accession_number=wanted.accession_number,
        study_instance_uid=wanted.study_instance_uid,
        patient_ids=patient_ids,
    )
    items = await repository.worklist(session, tenant_id, query, after=after, limit=limit)
    refs = await patient_refs(session, tenant_id, {item.patient_id for item in items})
    return [_entry(item, refs[item.patient_id]) for item in items if item.patient_id in refs]


async def resolve_patient_ids(
    session: AsyncSession, tenant_id: str, key: str, issuer: str | None = None
) -> list[str]:
    """The surviving patients ``key`` names: a gateway patient id (merges followed), or
    an identifier value (under ``issuer`` when given; its rows moved to the survivor on
    an ADT A40 merge)."""
    found: set[str] = set()
    if issuer is None:
        patient = await patients.resolve(session, tenant_id, key)
        if patient is not None:
            return [patient.id]
    for ident in await repository.identifiers_with_value(session, tenant_id, key, issuer):
        patient = await patients.resolve(session, tenant_id, ident.patient_id)
        if patient is not None:
            found.add(patient.id)
    return sorted(found)


async def _patient_ids(
    session: AsyncSession, tenant_id: str, wanted: WorklistFilter
) -> list[str] | None:
    ids: set[str] | None = None
    if wanted.patient_id is not None:
        ids = set(await resolve_patient_ids(session, tenant_id, wanted.patient_id, wanted.issuer))
    if wanted.patient_name is not None:
        family, _, rest = wanted.patient_name.partition("^")
        given = rest.partition("^")[0]
        named = set(
            await repository.patients_named(
                session, tenant_id, family, given, limit=MAX_NAMED_PATIENTS
            )
        )
        ids = named if ids is None else ids & named
    return sorted(ids) if ids is not None else None


async def patient_refs(
    session: AsyncSession, tenant_id: str, patient_ids: Iterable[str]
) -> dict[str, PatientRef]:
    wanted = sorted(patient_ids)
    rows = await repository.patients_by_id(session, tenant_id, wanted)
    identifiers = await repository.identifiers_of_patients(session, tenant_id, wanted)
    by_patient: dict[str, list[PatientIdentifier]] = {}
    for ident in identifiers:
        by_patient.setdefault(ident.patient_id, []).append(ident)
    return {row.id: _ref(row, by_patient.get(row.id, [])) for row in rows}


class IdentifierLike(Protocol):
    @property
    def value(self) -> str: ...
    @property
    def assigning_authority(self) -> str: ...
    @property
    def type_code(self) -> str: ...


Ident = TypeVar("Ident", bound=IdentifierLike)


def preferred_identifier(identifiers: Sequence[Ident]) -> Ident | None:
    """The identifier modalities see as Patient ID: a medical record number (type MR) first."""
    ranked = sorted(
        identifiers, key=lambda i: (i.type_code != "MR", i.assigning_authority, i.value)
    )
    return ranked[0] if ranked else None


def _ref(patient: Patient, identifiers: Sequence[PatientIdentifier]) -> PatientRef:
    chosen = preferred_identifier(identifiers)
    return PatientRef(
        id=patient.id,
        identifier=chosen.value if chosen else "",
        issuer=chosen.assigning_authority if chosen else "",
        family_name=patient.family_name,
        given_name=patient.given_name,
        middle_name=patient.middle_name,
        birth_date=patient.birth_date,
        sex=patient.sex,
    )


def _entry(item: WorklistItem, patient: PatientRef) -> WorklistEntry:
    return WorklistEntry(
        id=item.id,
        accession_number=item.accession_number,
        study_instance_uid=item.study_instance_uid,
        status=item.status,
        placer_order_number=item.placer_order_number,
        filler_order_number=item.filler_order_number,
        requested_procedure_id=item.requested_procedure_id,
        requested_procedure_code=item.requested_procedure_code,
        requested_procedure_scheme=item.requested_procedure_scheme,
        requested_procedure_description=item.requested_procedure_description,
        scheduled_procedure_step_id=item.scheduled_procedure_step_id,
        modality=item.modality,
        station_ae_title=item.station_ae_title,
        scheduled_start=item.scheduled_start,
        description=item.description,
        reason=item.reason,
        ordering_provider=item.ordering_provider,
        patient=patient,
    )


async def item_for_study(
    session: AsyncSession, tenant_id: str, study_uid: str, accession_number: str
) -> WorklistItem | None:
    """The worklist item a stored study fulfils: by the Study Instance UID the worklist
    handed out, else by accession number."""
    item = await repository.worklist_item_by_study(session, tenant_id, study_uid)
    if item is None and accession_number:
        item = await repository.worklist_item(session, tenant_id, accession_number)
    return item
