"""Desk storage. Every query names the tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import patients as clinical_patients
from novaza_gateway.clinical import repository as clinical
from novaza_gateway.desk.models import DeskContact, DeskOutboxEntry

CONTACTS = cast(Table, DeskContact.__table__)
OUTBOX = cast(Table, DeskOutboxEntry.__table__)

QUEUED, SENDING, DELIVERED, DEAD, SUPERSEDED = (
    "queued",
    "sending",
    "delivered",
    "dead",
    "superseded",
)
PENDING, FAILED = "pending", "failed"  # a contact's sync_status in upstream mode


async def contacts_by_external_id(
    session: AsyncSession, tenant_id: str, external_ids: Sequence[str]
) -> dict[str, Row[Any]]:
    """The stored contacts among ``external_ids``, as plain rows (no unit of work)."""
    if not external_ids:
        return {}
    query = select(CONTACTS).where(
        CONTACTS.c.tenant_id == tenant_id, CONTACTS.c.external_id.in_(external_ids)
    )
    return {row.external_id: row for row in (await session.execute(query)).all()}


async def patient_links(
    session: AsyncSession, tenant_id: str, patient_ids: Sequence[str]
) -> dict[str, str]:
    """Each of ``patient_ids`` that names a patient of this tenant -> the patient to link:
    itself, or the survivor it was merged into."""
    found = await clinical.patients_by_id(session, tenant_id, list(set(patient_ids)))
    links: dict[str, str] = {}
    for patient in found:
        if patient.merged_into_id is None:
            links[patient.id] = patient.id
            continue
        survivor = await clinical_patients.resolve(session, tenant_id, patient.id)
        if survivor is not None:
            links[patient.id] = survivor.id
    return links


async def contact(session: AsyncSession, tenant_id: str, contact_id: str) -> DeskContact | None:
    query = select(DeskContact).where(
        DeskContact.tenant_id == tenant_id, DeskContact.id == contact_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def contact_by_external_id(
    session: AsyncSession, tenant_id: str, external_id: str
) -> DeskContact | None:
    query = select(DeskContact).where(
        DeskContact.tenant_id == tenant_id, DeskContact.external_id == external_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def contacts_page(
    session: AsyncSession,
    tenant_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    updated_since: datetime | None,
    include_deleted: bool,
    external_id: str | None = None,
) -> Sequence[DeskContact]:
    """Oldest change first, by (updated_at, id): a cursor survives rows changing meanwhile
    (a changed row moves to the end, where an incremental reader finds it again)."""
    query = select(DeskContact).where(DeskContact.tenant_id == tenant_id)
    if updated_since is not None:
        query = query.where(DeskContact.updated_at >= updated_since)
    if not include_deleted:
        query = query.where(DeskContact.deleted_at.is_(None))
    if external_id is not None:
        query = query.where(DeskContact.external_id == external_id)
    if after is not None:
        at, last_id = after
        query = query.where(
            or_(
                DeskContact.updated_at > at,
                and_(DeskContact.updated_at == at, DeskContact.id > last_id),
            )
        )
    query = query.order_by(DeskContact.updated_at, DeskContact.id).limit(limit)
    return (await session.execute(query)).scalars().all()


async def supersede(session: AsyncSession, tenant_id: str, contact_ids: Sequence[str]) -> None:
    """Queued pushes of these contacts give way to the newer versions about to be queued."""
    if not contact_ids:
        return
    await session.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.tenant_id == tenant_id,
            OUTBOX.c.status == QUEUED,
            OUTBOX.c.contact_id.in_(contact_ids),
        )
        .values(status=SUPERSEDED)
    )


async def requeue_failed(
    session: AsyncSession, tenant_id: str, ids: Sequence[str] | None, external_ids: Sequence[str]
) -> list[Row[Any]]:
    """Flip this tenant's failed contacts (all of them when ``ids`` is None; else those named
    by id or external id) to ``pending`` and answer them as they now are. One statement: a
    contact a concurrent sync re-queued meanwhile is no longer ``failed`` and is left alone."""
    query = update(CONTACTS).where(
        CONTACTS.c.tenant_id == tenant_id, CONTACTS.c.sync_status == FAILED
    )
    if ids is not None:
        query = query.where(or_(CONTACTS.c.id.in_(ids), CONTACTS.c.external_id.in_(external_ids)))
    query = query.values(sync_status=PENDING).returning(*CONTACTS.c)
    return list((await session.execute(query)).all())
