"""Clinical queries; each takes the tenant id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical.models import (
    Encounter,
    Order,
    Patient,
    PatientIdentifier,
    WorklistItem,
)


async def patient(session: AsyncSession, tenant_id: str, patient_id: str) -> Patient | None:
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
    query = select(Encounter).where(
        Encounter.tenant_id == tenant_id, Encounter.visit_number == visit_number
    )
    return (await session.execute(query)).scalar_one_or_none()


async def order(session: AsyncSession, tenant_id: str, placer_number: str) -> Order | None:
    query = select(Order).where(
        Order.tenant_id == tenant_id, Order.placer_order_number == placer_number
    )
    return (await session.execute(query)).scalar_one_or_none()


async def order_by_filler(session: AsyncSession, tenant_id: str, filler: str) -> Order | None:
    query = select(Order).where(Order.tenant_id == tenant_id, Order.filler_order_number == filler)
    return (await session.execute(query)).scalars().first()


async def worklist_item_for_order(
    session: AsyncSession, tenant_id: str, order_id: str
) -> WorklistItem | None:
    query = select(WorklistItem).where(
        WorklistItem.tenant_id == tenant_id, WorklistItem.order_id == order_id
    )
    return (await session.execute(query)).scalars().first()


async def worklist_item(
    session: AsyncSession, tenant_id: str, accession_number: str
) -> WorklistItem | None:
    query = select(WorklistItem).where(
        WorklistItem.tenant_id == tenant_id, WorklistItem.accession_number == accession_number
    )
    return (await session.execute(query)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    """What a worklist reader (REST worklist, DICOM MWL C-FIND) filters on."""

    statuses: Sequence[str] = ("scheduled", "in_progress")
    modality: str | None = None
    station_ae_title: str | None = None
    start_from: datetime | None = None
    start_to: datetime | None = None
    accession_number: str | None = None
    patient_id: str | None = None


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
        (WorklistItem.patient_id, q.patient_id),
    ):
        if value is not None:
            conditions.append(column == value)
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


async def move_patient_records(
    session: AsyncSession, tenant_id: str, prior_id: str, survivor_id: str
) -> None:
    """A merge: identifiers, encounters, orders and worklist items follow the survivor."""
    for table in (PatientIdentifier, Encounter, Order, WorklistItem):
        await session.execute(
            update(table)
            .where(table.tenant_id == tenant_id, table.patient_id == prior_id)
            .values(patient_id=survivor_id)
        )
