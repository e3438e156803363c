"""Encounters (visits) and their state machine.

    preadmit --admit/register--> admitted --transfer--> transferred --discharge--> discharged
    admitted --cancel admit--> canceled;  transferred --cancel transfer--> admitted;
    discharged --cancel discharge--> admitted

Repeating an event is a no-op. A transfer, discharge or update for a visit the gateway has
never seen creates it in the resulting state (the sender may predate the gateway); a cancel
of an unknown visit, or any other move, is an ``InvalidTransition``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import repository, writes
from novaza_gateway.clinical.errors import InvalidTransition
from novaza_gateway.clinical.models import Encounter, Patient
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id

PREADMIT, ADMITTED, TRANSFERRED, DISCHARGED, CANCELED = (
    "preadmit",
    "admitted",
    "transferred",
    "discharged",
    "canceled",
)
ENCOUNTER_STATES = (PREADMIT, ADMITTED, TRANSFERRED, DISCHARGED, CANCELED)


class EncounterEvent(StrEnum):
    PREADMIT = "preadmit"
    ADMIT = "admit"
    REGISTER = "register"
    TRANSFER = "transfer"
    DISCHARGE = "discharge"
    CANCEL_ADMIT = "cancel_admit"
    CANCEL_TRANSFER = "cancel_transfer"
    CANCEL_DISCHARGE = "cancel_discharge"
    UPDATE = "update"


_ANY = frozenset({None, *ENCOUNTER_STATES})
# event -> (states it may start from, state it ends in; None keeps the current state)
TRANSITIONS: dict[EncounterEvent, tuple[frozenset[str | None], str | None]] = {
    EncounterEvent.PREADMIT: (frozenset({None, PREADMIT}), PREADMIT),
    EncounterEvent.ADMIT: (frozenset({None, PREADMIT, ADMITTED}), ADMITTED),
    EncounterEvent.REGISTER: (frozenset({None, PREADMIT, ADMITTED}), ADMITTED),
    EncounterEvent.TRANSFER: (frozenset({None, ADMITTED, TRANSFERRED}), TRANSFERRED),
    EncounterEvent.DISCHARGE: (frozenset({None, ADMITTED, TRANSFERRED, DISCHARGED}), DISCHARGED),
    EncounterEvent.CANCEL_ADMIT: (frozenset({PREADMIT, ADMITTED, CANCELED}), CANCELED),
    EncounterEvent.CANCEL_TRANSFER: (frozenset({TRANSFERRED, ADMITTED}), ADMITTED),
    EncounterEvent.CANCEL_DISCHARGE: (frozenset({DISCHARGED, ADMITTED}), ADMITTED),
    EncounterEvent.UPDATE: (_ANY, None),
}


def next_status(current: str | None, event: EncounterEvent) -> str:
    allowed, target = TRANSITIONS[event]
    if current not in allowed:
        state = current or "unknown"
        raise InvalidTransition(f"A visit in state '{state}' cannot take the event '{event}'.")
    return target or current or ADMITTED


@dataclass(slots=True)
class Visit:
    visit_number: str
    patient_class: str = ""
    location: str = ""
    prior_location: str = ""
    attending: str = ""
    admitted_at: datetime | None = None
    discharged_at: datetime | None = None


async def check_event(
    session: AsyncSession, tenant_id: str, visit: Visit, event: EncounterEvent
) -> None:
    """Raise ``InvalidTransition`` if the visit cannot take ``event``; changes nothing, so a
    caller can check every step of a message before the first change."""
    encounter = await repository.encounter(session, tenant_id, visit.visit_number)
    next_status(encounter.status if encounter else None, event)


async def apply_event(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    patient: Patient,
    visit: Visit,
    event: EncounterEvent,
) -> Encounter:
    encounter = await repository.encounter(session, tenant_id, visit.visit_number)
    before = encounter.status if encounter else None
    status = next_status(before, event)
    now = utcnow()
    if encounter is None:
        encounter = writes.new(
            Encounter,
            id=new_id(),
            tenant_id=tenant_id,
            patient_id=patient.id,
            visit_number=visit.visit_number,
            status=status,
            created_at=now,
            updated_at=now,
        )
        repository.add(session, encounter)
    _update(encounter, visit, event)
    encounter.patient_id = patient.id
    encounter.status = status
    encounter.updated_at = now
    writes.audit(
        session,
        actor,
        f"encounter.{event}",
        "encounter",
        encounter.id,
        tenant_id=tenant_id,
        patient_id=patient.id,
        before={"status": before},
        after={"status": status},
    )
    return encounter


def _update(encounter: Encounter, visit: Visit, event: EncounterEvent) -> None:
    if event is EncounterEvent.TRANSFER and visit.location != encounter.location:
        encounter.prior_location = visit.prior_location or encounter.location or ""
    if event is EncounterEvent.CANCEL_TRANSFER:
        encounter.location = visit.location or encounter.prior_location or encounter.location
    elif visit.location:
        encounter.location = visit.location
    if event is EncounterEvent.CANCEL_DISCHARGE:
        encounter.discharged_at = None
    for name in ("patient_class", "attending", "admitted_at", "discharged_at"):
        value = getattr(visit, name)
        if value and not (event is EncounterEvent.CANCEL_DISCHARGE and name == "discharged_at"):
            setattr(encounter, name, value)
