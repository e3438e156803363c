"""Orders and their worklist items: one scheduled procedure step per requested procedure (an
ORC with several OBRs is one order with several items, each with its own accession number).

Worklist item status: scheduled -> in_progress -> completed; scheduled or in_progress ->
canceled or discontinued. Completed, canceled and discontinued are final. Asking for the
status an item already has changes nothing, so every order message can be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import repository, writes
from novaza_gateway.clinical.errors import InvalidTransition, OrderNotFound
from novaza_gateway.clinical.models import Order, Patient, WorklistItem
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id

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


def accession_for(request: ProcedureRequest, step: int = 1) -> str:
    """The item's accession number: the one the order gives (IPC-1, OBR-18), else the filler,
    else the placer order number; a further procedure (``step`` n > 1, the n-th OBR of an
    ORC) without one of its own gets ``-n`` after it."""
    if request.accession_number:
        return request.accession_number
    base = request.filler_order_number or request.placer_order_number
    return base if step == 1 else f"{base[:60]}-{step}"


async def find(
    session: AsyncSession, tenant_id: str, placer: str, filler: str = ""
) -> tuple[Order, WorklistItem] | None:
    """The order with this placer (else filler) number and its first worklist item."""
    found = await _order_items(session, tenant_id, placer, filler)
    return (found[0], found[1][0]) if found is not None else None


async def _order_items(
    session: AsyncSession, tenant_id: str, placer: str, filler: str = ""
) -> tuple[Order, list[WorklistItem]] | None:
    order = await repository.order(session, tenant_id, placer) if placer else None
    if order is None and filler:
        order = await repository.order_by_filler(session, tenant_id, filler)
    if order is None:
        return None
    items = await repository.worklist_items_of_order(session, tenant_id, order.id)
    if not items:  # every order is created with its item
        raise OrderNotFound()
    return order, list(items)


async def place(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    patient: Patient,
    request: ProcedureRequest,
    step: int = 1,
) -> tuple[WorklistItem, bool]:
    """A new order and its scheduled worklist item; a repeat answers the existing one.
    ``step`` n > 1: the order's n-th procedure (an ORC with several OBRs), its own item."""
    found = await _order_items(session, tenant_id, request.placer_order_number)
    order = found[0] if found is not None else None
    if found is not None:
        accession = accession_for(request, step)
        same = [i for i in found[1] if i.accession_number == accession]
        if same or step == 1:
            return (same or found[1])[0], False
    accession = await _free_accession(session, tenant_id, request, step)
    now = utcnow()
    if order is None:
        order = writes.new(
            Order,
            id=new_id(),
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
        repository.add(session, order)
    item_id = new_id()
    values = {name: getattr(request, name) for name in _COPIED}
    values.update(
        id=item_id,
        tenant_id=tenant_id,
        order_id=order.id,
        patient_id=order.patient_id,
        status=SCHEDULED,
        created_at=now,
        updated_at=now,
        placer_order_number=request.placer_order_number,
        accession_number=accession,
        study_instance_uid=request.study_instance_uid or study_uid_for(item_id),
        scheduled_start=request.scheduled_start or now,  # none requested: as soon as possible
    )
    item = writes.new(WorklistItem, **values)
    repository.add(session, item)
    _audit(session, actor, tenant_id, item, "order.place", None)
    return item, True


async def check_place(
    session: AsyncSession, tenant_id: str, request: ProcedureRequest, step: int = 1
) -> None:
    """Raise what ``place`` would raise, changing nothing (a caller checks before it changes
    anything else, e.g. registers the order's patient)."""
    found = await _order_items(session, tenant_id, request.placer_order_number)
    if found is not None:
        accession = accession_for(request, step)
        if step == 1 or any(i.accession_number == accession for i in found[1]):
            return
    await _free_accession(session, tenant_id, request, step)


async def _free_accession(
    session: AsyncSession, tenant_id: str, request: ProcedureRequest, step: int
) -> str:
    accession = accession_for(request, step)
    if await repository.worklist_item(session, tenant_id, accession) is not None:
        raise InvalidTransition("Another order already uses this accession number.")
    return accession


async def change(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    request: ProcedureRequest,
    step: int | None = None,
) -> WorklistItem:
    """XO: change what an open order asks for (with several procedures: the one named)."""
    order, items = await _load(session, tenant_id, request, step)
    if len(items) > 1:
        raise OrderNotFound(
            "The order has several procedures: name the one to change (OBR-18, IPC-1)."
        )
    item = items[0]
    if item.status in FINAL:
        raise InvalidTransition(f"A worklist item that is {item.status} cannot change.")
    _copy(item, request)
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
    step: int | None = None,
) -> WorklistItem:
    """CA, DC, SC: move the order's worklist items (or the one named) to ``status``; a repeat
    is a no-op. Every item is checked before the first moves."""
    order, items = await _load(session, tenant_id, request, step)
    targets = [next_status(item.status, status) for item in items]
    now = utcnow()
    for item, target in zip(items, targets, strict=True):
        before = item.status
        item.status = order.status = target
        if before != target:
            order.updated_at = item.updated_at = now
            _audit(session, actor, tenant_id, item, f"order.{target}", before)
    return items[0]


async def _load(
    session: AsyncSession, tenant_id: str, request: ProcedureRequest, step: int | None
) -> tuple[Order, list[WorklistItem]]:
    """The order's items a control applies to: the one its accession names (explicit, or
    derived from ``step``); without a name, or the only one, all of them."""
    found = await _order_items(
        session, tenant_id, request.placer_order_number, request.filler_order_number
    )
    if found is None:
        raise OrderNotFound()
    order, items = found
    if request.accession_number or step is not None:
        accession = accession_for(request, step or 1)
        named = [i for i in items if i.accession_number == accession]
        if named:
            return order, named
        if len(items) > 1:
            raise OrderNotFound("No procedure of this order has this accession number.")
    return order, items


# What a request sets on its item (``place``) or changes when given (``change``).
_COPIED = tuple(
    spec.name
    for spec in fields(ProcedureRequest)
    if spec.name not in ("placer_order_number", "accession_number")
)


def _copy(item: WorklistItem, request: ProcedureRequest) -> None:
    """XO: the request's non-empty values replace the item's."""
    for name in _COPIED:
        value = getattr(request, name)
        if value:
            setattr(item, name, value)
    item.placer_order_number = item.placer_order_number or request.placer_order_number


def _audit(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    item: WorklistItem,
    action: str,
    before: str | None,
) -> None:
    writes.audit(
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
    request = ProcedureRequest(
        placer_order_number=item.placer_order_number, accession_number=accession_number
    )
    return await set_status(session, actor, tenant_id, request, status)


async def start_on_receipt(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    study_instance_uid: str,
    accession_number: str,
) -> WorklistItem | None:
    """The archive received a study's first instance: the scheduled item it fulfils is now
    in progress (dcm4chee's "update worklist on study receipt"; no MPPS). The item is the
    one handed the study's UID, else the one with its accession number; none, several, or a
    UID and an accession naming two different items, or an item not scheduled: no change.
    Answers the item moved, if one was."""
    found = await repository.worklist_items_for_study(
        session, tenant_id, study_instance_uid, accession_number
    )
    if len(found) != 1:
        return None
    (item,) = found
    if item.status != SCHEDULED:
        return None
    by_uid = item.study_instance_uid == study_instance_uid
    moved = await repository.move_worklist_item(
        session, tenant_id, item, from_status=SCHEDULED, to_status=IN_PROGRESS, at=utcnow()
    )
    if not moved:  # a concurrent store (or order message) moved it first
        return None
    audit.record(
        session,
        actor,
        "worklist.item.in_progress",
        "worklist_item",
        item.accession_number,
        tenant_id=tenant_id,
        patient_id=item.patient_id,
        before={"status": SCHEDULED},
        after={
            "status": IN_PROGRESS,
            "studyInstanceUID": study_instance_uid,
            "matchedBy": "studyInstanceUID" if by_uid else "accessionNumber",
        },
    )
    return item
