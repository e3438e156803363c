"""Clinical queries; each takes the tenant id.

The lookups by key (identifier, visit, order number, accession) answer from the rows a group
prefetched into the session when they cover the key (``prefetch``); records are added with
``add()`` so such a group sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from novaza_gateway.clinical import prefetch, writes
from novaza_gateway.clinical.models import (
    Encounter,
    Order,
    Patient,
    PatientIdentifier,
    WorklistItem,
)

ClinicalRecord = Patient | PatientIdentifier | Encounter | Order | WorklistItem


def add(session: AsyncSession, record: ClinicalRecord) -> None:
    """A new record into the session (or the group's write buffer, ``writes``), where the
    group's lookups will find it."""
    writes.record(session, record)
    prefetch.remember(session, record.tenant_id, record)


async def patient(session: AsyncSession, tenant_id: str, patient_id: str) -> Patient | None:
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None and patient_id in snap.patients:
        return snap.patients[patient_id]
    query = select(Patient).where(Patient.tenant_id == tenant_id, Patient.id == patient_id)
    return (await session.execute(query)).scalar_one_or_none()


async def identifier(
    session: AsyncSession, tenant_id: str, authority: str, value: str
) -> PatientIdentifier | None:
    query = select(PatientIdentifier).where(
        PatientIdentifier.tenant_id == tenant_id,
        PatientIdentifier.assigning_authority == authority,
        PatientIdentifier.value == value,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def identifiers_matching(
    session: AsyncSession, tenant_id: str, keys: Sequence[tuple[str, str]]
) -> Sequence[tuple[PatientIdentifier, Patient]]:
    """The stored identifiers among ``keys`` ((assigning authority, value) pairs), each with
    its patient: one query."""
    if not keys:
        return []
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None:
        found = snap.identifiers_matching(keys)
        if found is not None:
            return found
    query = (
        select(PatientIdentifier, Patient)
        .join(Patient, Patient.id == PatientIdentifier.patient_id)
        .where(
            PatientIdentifier.tenant_id == tenant_id,
            Patient.tenant_id == tenant_id,
            or_(
                *(
                    and_(
                        PatientIdentifier.assigning_authority == authority,
                        PatientIdentifier.value == value,
                    )
                    for authority, value in keys
                )
            ),
        )
    )
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def identifiers_of(
    session: AsyncSession, tenant_id: str, patient_id: str
) -> Sequence[PatientIdentifier]:
    query = select(PatientIdentifier).where(
        PatientIdentifier.tenant_id == tenant_id, PatientIdentifier.patient_id == patient_id
    )
    return (await session.execute(query)).scalars().all()


async def encounter(session: AsyncSession, tenant_id: str, visit_number: str) -> Encounter | None:
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None and visit_number in snap.encounters:
        return snap.encounters[visit_number]
    query = select(Encounter).where(
        Encounter.tenant_id == tenant_id, Encounter.visit_number == visit_number
    )
    return (await session.execute(query)).scalar_one_or_none()


async def order(session: AsyncSession, tenant_id: str, placer_number: str) -> Order | None:
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None and placer_number in snap.placers:
        return snap.placers[placer_number]
    query = select(Order).where(
        Order.tenant_id == tenant_id, Order.placer_order_number == placer_number
    )
    return (await session.execute(query)).scalar_one_or_none()


async def order_by_filler(session: AsyncSession, tenant_id: str, filler: str) -> Order | None:
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None and filler in snap.fillers:
        return snap.fillers[filler]
    query = select(Order).where(Order.tenant_id == tenant_id, Order.filler_order_number == filler)
    return (await session.execute(query)).scalars().first()


async def worklist_items_of_order(
    session: AsyncSession, tenant_id: str, order_id: str
) -> Sequence[WorklistItem]:
    """An order's items (one per requested procedure), oldest first."""
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None and order_id in snap.items_of_order:
        return list(snap.items_of_order[order_id])
    query = (
        select(WorklistItem)
        .where(WorklistItem.tenant_id == tenant_id, WorklistItem.order_id == order_id)
        .order_by(WorklistItem.created_at, WorklistItem.id)
    )
    return (await session.execute(query)).scalars().all()


async def worklist_item(
    session: AsyncSession, tenant_id: str, accession_number: str
) -> WorklistItem | None:
    snap = prefetch.snapshot(session, tenant_id)
    if snap is not None and accession_number in snap.accessions:
        return snap.accessions[accession_number]
    query = select(WorklistItem).where(
        WorklistItem.tenant_id == tenant_id, WorklistItem.accession_number == accession_number
    )
    return (await session.execute(query)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    """What a worklist reader (REST worklist, DICOM MWL C-FIND) filters on.

    Text values with ``*`` or ``?`` match as DICOM wildcards, case-insensitively; others
    match exactly. ``patient_ids`` keeps the items of any of these patients.
    """

    statuses: Sequence[str] = ("scheduled", "in_progress")
    modality: str | None = None
    station_ae_title: str | None = None
    start_from: datetime | None = None
    start_to: datetime | None = None
    accession_number: str | None = None
    patient_id: str | None = None
    patient_ids: Sequence[str] | None = None
    study_instance_uid: str | None = None


def _like(value: str) -> str | None:
    """A DICOM wildcard value (``*`` any run, ``?`` one character) as an upper-case LIKE
    pattern; None when the value has no wildcard."""
    if "*" not in value and "?" not in value:
        return None
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_").upper()


def matches(
    column: ColumnElement[str] | InstrumentedAttribute[str], value: str
) -> ColumnElement[bool]:
    """``column`` equals ``value``; a value with wildcards matches as a pattern, ignoring
    case alike on SQLite and PostgreSQL."""
    pattern = _like(value)
    if pattern is None:
        return column == value
    return func.upper(column).like(pattern, escape="\\")


async def worklist(
    session: AsyncSession,
    tenant_id: str,
    query: WorklistQuery | None = None,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> Sequence[WorklistItem]:
    """Items by scheduled start, then id; ``after`` is the last (start, id) of the previous page."""
    q = query or WorklistQuery()
    conditions = [
        WorklistItem.tenant_id == tenant_id,
        WorklistItem.status.in_(q.statuses),
    ]
    for column, value in (
        (WorklistItem.modality, q.modality),
        (WorklistItem.station_ae_title, q.station_ae_title),
        (WorklistItem.accession_number, q.accession_number),
        (WorklistItem.study_instance_uid, q.study_instance_uid),
    ):
        if value is not None:
            conditions.append(matches(column, value))
    if q.patient_id is not None:
        conditions.append(WorklistItem.patient_id == q.patient_id)
    if q.patient_ids is not None:
        conditions.append(WorklistItem.patient_id.in_(q.patient_ids))
    if q.start_from is not None:
        conditions.append(WorklistItem.scheduled_start >= q.start_from)
    if q.start_to is not None:
        conditions.append(WorklistItem.scheduled_start < q.start_to)
    if after is not None:
        start, item_id = after
        conditions.append(
            (WorklistItem.scheduled_start > start)
            | ((WorklistItem.scheduled_start == start) & (WorklistItem.id > item_id))
        )
    statement = (
        select(WorklistItem)
        .where(*conditions)
        .order_by(WorklistItem.scheduled_start, WorklistItem.id)
        .limit(limit)
    )
    return (await session.execute(statement)).scalars().all()


async def worklist_item_by_study(
    session: AsyncSession, tenant_id: str, study_instance_uid: str
) -> WorklistItem | None:
    query = select(WorklistItem).where(
        WorklistItem.tenant_id == tenant_id, WorklistItem.study_instance_uid == study_instance_uid
    )
    return (await session.execute(query)).scalars().first()


async def worklist_items_for_study(
    session: AsyncSession, tenant_id: str, study_instance_uid: str, accession_number: str
) -> Sequence[WorklistItem]:
    """The items a received study may fulfil: those handed its Study Instance UID and the
    one with its accession number (a few at most: the caller judges an ambiguity)."""
    keys = [
        column == value
        for column, value in (
            (WorklistItem.study_instance_uid, study_instance_uid),
            (WorklistItem.accession_number, accession_number),
        )
        if value
    ]
    if not keys:
        return []
    query = (
        select(WorklistItem)
        .where(WorklistItem.tenant_id == tenant_id, or_(*keys))
        .order_by(WorklistItem.id)
        .limit(4)
    )
    return (await session.execute(query)).scalars().all()


async def move_worklist_item(
    session: AsyncSession,
    tenant_id: str,
    item: WorklistItem,
    *,
    from_status: str,
    to_status: str,
    at: datetime,
) -> bool:
    """Move the item (and its order) only if it still has ``from_status``: one conditional
    UPDATE, so of two racing moves exactly one wins. The loaded objects follow."""
    prefetch.forget(session)
    moved = await session.execute(
        update(WorklistItem)
        .where(
            WorklistItem.tenant_id == tenant_id,
            WorklistItem.id == item.id,
            WorklistItem.status == from_status,
        )
        .values(status=to_status, updated_at=at)
    )
    if getattr(moved, "rowcount", 0) != 1:
        return False
    await session.execute(
        update(Order)
        .where(Order.tenant_id == tenant_id, Order.id == item.order_id, Order.status == from_status)
        .values(status=to_status, updated_at=at)
    )
    return True


async def patients_by_id(
    session: AsyncSession, tenant_id: str, patient_ids: Sequence[str]
) -> Sequence[Patient]:
    if not patient_ids:
        return []
    query = select(Patient).where(Patient.tenant_id == tenant_id, Patient.id.in_(patient_ids))
    return (await session.execute(query)).scalars().all()


async def identifiers_of_patients(
    session: AsyncSession, tenant_id: str, patient_ids: Sequence[str]
) -> Sequence[PatientIdentifier]:
    if not patient_ids:
        return []
    query = (
        select(PatientIdentifier)
        .where(
            PatientIdentifier.tenant_id == tenant_id,
            PatientIdentifier.patient_id.in_(patient_ids),
        )
        .order_by(PatientIdentifier.assigning_authority, PatientIdentifier.value)
    )
    return (await session.execute(query)).scalars().all()


async def identifiers_with_value(
    session: AsyncSession, tenant_id: str, value: str, authority: str | None = None
) -> Sequence[PatientIdentifier]:
    """The identifiers with this value (under any assigning authority unless one is given)."""
    query = select(PatientIdentifier).where(
        PatientIdentifier.tenant_id == tenant_id, PatientIdentifier.value == value
    )
    if authority is not None:
        query = query.where(PatientIdentifier.assigning_authority == authority)
    return (await session.execute(query)).scalars().all()


async def patients_named(
    session: AsyncSession, tenant_id: str, family: str, given: str, *, limit: int
) -> Sequence[str]:
    """Ids of unmerged patients whose family and given names match (``""``: any)."""
    conditions = [Patient.tenant_id == tenant_id, Patient.merged_into_id.is_(None)]
    for column, value in ((Patient.family_name, family), (Patient.given_name, given)):
        if value.strip("*"):
            pattern = _like(value)
            upper = func.upper(column)
            conditions.append(
                upper == value.upper() if pattern is None else upper.like(pattern, escape="\\")
            )
    query = select(Patient.id).where(*conditions).order_by(Patient.id).limit(limit)
    return (await session.execute(query)).scalars().all()


async def move_patient_records(
    session: AsyncSession, tenant_id: str, prior_id: str, survivor_id: str
) -> None:
    """A merge: identifiers, encounters, orders and worklist items follow the survivor."""
    prefetch.forget(session)  # rows move under the remembered objects
    for table in (PatientIdentifier, Encounter, Order, WorklistItem):
        await session.execute(
            update(table)
            .where(table.tenant_id == tenant_id, table.patient_id == prior_id)
            .values(patient_id=survivor_id)
        )
