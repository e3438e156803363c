"""Orders and their worklist items (one scheduled procedure step per order).

Worklist item status: scheduled -> in_progress -> completed; scheduled or in_progress ->
canceled or discontinued. Completed, canceled and discontinued are final. Asking for the
status an item already has changes nothing, so every order message can be replayed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import repository
from novaza_gateway.clinical.errors import InvalidTransition, OrderNotFound
from novaza_gateway.clinical.models import Order, Patient, WorklistItem
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED, DISCONTINUED = (
    "scheduled",
    "in_progress",
    "completed",
    "canceled",
    "discontinued",
)
WORKLIST_STATUSES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED, DISCONTINUED)
FINAL = frozenset({COMPLETED, CANCELED, DISCONTINUED})
_ORDER = {SCHEDULED: 0, IN_PROGRESS: 1, COMPLETED: 2, CANCELED: 2, DISCONTINUED: 2}


@dataclass(slots=True)
class ProcedureRequest:
    """What an order asks for; empty fields leave the stored value alone on a change."""

    placer_order_number: str
    filler_order_number: str = ""
    accession_number: str = ""
    requested_procedure_id: str = ""
    requested_procedure_code: str = ""
    requested_procedure_scheme: str = ""
    requested_procedure_description: str = ""
    scheduled_procedure_step_id: str = ""
    study_instance_uid: str = ""  # IPC-3 when the order names it; else one is made up
    modality: str = ""
    scheduled_start: datetime | None = None
    station_ae_title: str = ""
    description: str = ""
    reason: str = ""
    ordering_provider: str = ""


def study_uid_for(item_id: str) -> str:
    """The Study Instance UID a worklist item hands the modality: a UUID-derived UID
    (``2.25.<the item id as an integer>``, PS3.5 B.2), unique without a registered root."""
    return f"2.25.{int(item_id, 16)}"


def next_status(current: str, target: str) -> str:
    if target not in WORKLIST_STATUSES:
        raise InvalidTransition(f"'{target}' is not a worklist status.")
    if current == target:
        return current
    if current in FINAL or _ORDER[target] < _ORDER[current]:
        raise InvalidTransition(f"A worklist item that is {current} cannot become {target}.")
    return target


async def find(
    session: AsyncSession, tenant_id: str, placer: str, filler: str = ""
) -> tuple[Order, WorklistItem] | None:
    order = await repository.order(session, tenant_id, placer) if placer else None
    if order is None and filler:
        order = await repository.order_by_filler(session, tenant_id, filler)
    if order is None:
        return None
    item = await repository.worklist_item_for_order(session, tenant_id, order.id)
    if item is None:  # every order is created with its item
        raise OrderNotFound()
    return order, item


async def place(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    patient: Patient,
    request: ProcedureRequest,
) -> tuple[WorklistItem, bool]:
    """A new order and its scheduled worklist item; a repeat answers the existing one."""
    found = await find(session, tenant_id, request.placer_order_number)
    if found is not None:
        return found[1], False
    accession = await _free_accession(session, tenant_id, request)
    now = utcnow()
    order = Order(
        id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        patient_id=patient.id,
        placer_order_number=request.placer_order_number,
        filler_order_number=request.filler_order_number,
        status=SCHEDULED,
        ordering_provider=request.ordering_provider,
        reason=request.reason,
        created_at=now,
        updated_at=now,
    )
    item = WorklistItem(
        id=uuid.uuid4().hex,
        tenant_id=tenant_id,
        order_id=order.id,
        patient_id=patient.id,
        status=SCHEDULED,
        created_at=now,
        updated_at=now,
    )
    _copy(item, request, every=True)
    item.accession_number = accession
    item.study_instance_uid = request.study_instance_uid or study_uid_for(item.id)
    item.scheduled_start = request.scheduled_start or now  # no requested time: as soon as possible
    repository.add(session, order)
    repository.add(session, item)
    _audit(session, actor, tenant_id, item, "order.place", None)
    return item, True


async def check_place(session: AsyncSession, tenant_id: str, request: ProcedureRequest) -> None:
    """Raise what ``place`` would raise, changing nothing (a caller checks before it changes
    anything else, e.g. registers the order's patient)."""
    if await find(session, tenant_id, request.placer_order_number) is None:
        await _free_accession(session, tenant_id, request)


async def _free_accession(session: AsyncSession, tenant_id: str, request: ProcedureRequest) -> str:
    accession = request.accession_number or request.filler_order_number
    accession = accession or request.placer_order_number
    if await repository.worklist_item(session, tenant_id, accession) is not None:
        raise InvalidTransition("Another order already uses this accession number.")
    return accession


async def change(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, request: ProcedureRequest
) -> WorklistItem:
    """XO: change what an open order asks for."""
    order, item = await _load(session, tenant_id, request)
    if item.status in FINAL:
        raise InvalidTransition(f"A worklist item that is {item.status} cannot change.")
    _copy(item, request, every=False)
    if request.reason:
        order.reason = request.reason
    if request.ordering_provider:
        order.ordering_provider = request.ordering_provider
    order.updated_at = item.updated_at = utcnow()
    _audit(session, actor, tenant_id, item, "order.change", item.status)
    return item


async def set_status(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    request: ProcedureRequest,
    status: str,
) -> WorklistItem:
    """CA, DC, SC: move the order's worklist item to ``status``; a repeat is a no-op."""
    order, item = await _load(session, tenant_id, request)
    before = item.status
    item.status = order.status = next_status(item.status, status)
    if before != item.status:
        order.updated_at = item.updated_at = utcnow()
        _audit(session, actor, tenant_id, item, f"order.{item.status}", before)
    return item


async def _load(
    session: AsyncSession, tenant_id: str, request: ProcedureRequest
) -> tuple[Order, WorklistItem]:
    found = await find(session, tenant_id, request.placer_order_number, request.filler_order_number)
    if found is None:
        raise OrderNotFound()
    return found


def _copy(item: WorklistItem, request: ProcedureRequest, *, every: bool) -> None:
    for spec in fields(ProcedureRequest):
        if spec.name in ("placer_order_number", "accession_number"):
            continue
        value = getattr(request, spec.name)
        if every or value:
            setattr(item, spec.name, value)
    item.placer_order_number = item.placer_order_number or request.placer_order_number


def _audit(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    item: WorklistItem,
    action: str,
    before: str | None,
) -> None:
    audit.record(
        session,
        actor,
        action,
        "worklist_item",
        item.accession_number,
        tenant_id=tenant_id,
        patient_id=item.patient_id,
        before={"status": before},
        after={"status": item.status},
    )


async def set_status_by_accession(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, accession_number: str, status: str
) -> WorklistItem:
    """For the imaging area: acquisition started, QC confirmed (completed), ... Idempotent."""
    item = await repository.worklist_item(session, tenant_id, accession_number)
    if item is None:
        raise OrderNotFound("No worklist item has this accession number.")
    request = ProcedureRequest(placer_order_number=item.placer_order_number)
    return await set_status(session, actor, tenant_id, request, status)
