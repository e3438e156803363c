"""The patient registry: identifiers with assigning authority, demographics, merges.

A patient is found by any of its identifiers. An identifier of a merged patient resolves to
the survivor: its identifier rows move to the survivor, and its row keeps ``merged_into_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import repository, writes
from novaza_gateway.clinical.models import Patient, PatientIdentifier
from novaza_gateway.core import audit
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id

MAX_MERGE_HOPS = 16
# HL7's "delete this value" marker (an explicit null); an empty field means "no change".
HL7_NULL = '""'


@dataclass(frozen=True, slots=True)
class Identifier:
    value: str
    authority: str = ""
    type_code: str = ""


@dataclass(slots=True)
class Demographics:
    family_name: str = ""
    given_name: str = ""
    middle_name: str = ""
    birth_date: date | None = None
    sex: str = ""
    address: dict[str, Any] = field(default_factory=dict)
    phone: str = ""


@dataclass(slots=True)
class PatientData:
    identifiers: list[Identifier]
    demographics: Demographics = field(default_factory=Demographics)


async def resolve(session: AsyncSession, tenant_id: str, patient_id: str) -> Patient | None:
    """The patient with this id, or the survivor it was merged into."""
    patient = await repository.patient(session, tenant_id, patient_id)
    hops = 0
    while patient is not None and patient.merged_into_id and hops < MAX_MERGE_HOPS:
        patient = await repository.patient(session, tenant_id, patient.merged_into_id)
        hops += 1
    return patient


async def find(
    session: AsyncSession, tenant_id: str, identifiers: Sequence[Identifier]
) -> Patient | None:
    """The patient one of ``identifiers`` names (the first that is known), merges followed."""
    patient, _ = await _lookup(session, tenant_id, identifiers)
    return patient


async def _lookup(
    session: AsyncSession, tenant_id: str, identifiers: Sequence[Identifier]
) -> tuple[Patient | None, set[tuple[str, str]]]:
    """The patient and which of ``identifiers`` are already stored (to any patient)."""
    keys = [(i.authority, i.value) for i in identifiers]
    rows = await repository.identifiers_matching(session, tenant_id, keys)
    owners = {(ident.assigning_authority, ident.value): patient for ident, patient in rows}
    for key in keys:
        if key in owners:
            patient = owners[key]
            if patient.merged_into_id:
                return await resolve(session, tenant_id, patient.id), set(owners)
            return patient, set(owners)
    return None, set(owners)


async def register(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    data: PatientData,
    *,
    update: bool = True,
) -> tuple[Patient, bool]:
    """Find the patient by any identifier or create it; ``update`` applies the demographics.

    Answers the patient and whether it was created.
    """
    patient, known = await _lookup(session, tenant_id, data.identifiers)
    now = utcnow()
    if patient is None:
        patient = writes.new(
            Patient, id=new_id(), tenant_id=tenant_id, created_at=now, updated_at=now
        )
        _apply(patient, data.demographics, creating=True)
        repository.add(session, patient)
        _add_identifiers(session, tenant_id, patient, data.identifiers, known)
        writes.audit(
            session,
            actor,
            "patient.create",
            "patient",
            patient.id,
            tenant_id=tenant_id,
            patient_id=patient.id,
        )
        return patient, True
    _add_identifiers(session, tenant_id, patient, data.identifiers, known)
    if update and _apply(patient, data.demographics, creating=False):
        patient.updated_at = now
        writes.audit(
            session,
            actor,
            "patient.update",
            "patient",
            patient.id,
            tenant_id=tenant_id,
            patient_id=patient.id,
        )
    return patient, False


async def merge(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    survivor: Patient,
    prior: Sequence[Identifier],
) -> Patient | None:
    """Merge the patient known by ``prior`` into ``survivor`` (ADT A40). Idempotent.

    Its identifiers, encounters, orders and worklist items move to the survivor. When no
    patient has the prior identifiers, they are attached to the survivor so they resolve.
    Answers the merged (non-surviving) patient, if there was one.
    """
    merged, known = await _lookup(session, tenant_id, prior)
    if merged is None:
        _add_identifiers(session, tenant_id, survivor, prior, known)
        return None
    if merged.id == survivor.id:
        return None
    await writes.flush(session)
    await session.flush()
    await repository.move_patient_records(session, tenant_id, merged.id, survivor.id)
    merged.merged_into_id = survivor.id
    merged.updated_at = utcnow()
    writes.audit(
        session,
        actor,
        "patient.merge",
        "patient",
        merged.id,
        tenant_id=tenant_id,
        patient_id=survivor.id,
        before={"patientId": merged.id},
        after={"mergedInto": survivor.id},
    )
    return merged


def _add_identifiers(
    session: AsyncSession,
    tenant_id: str,
    patient: Patient,
    identifiers: Sequence[Identifier],
    known: set[tuple[str, str]],
) -> None:
    """Attach the identifiers not stored yet (``known``: those that are) to the patient."""
    for ident in identifiers:
        key = (ident.authority, ident.value)
        if key in known:
            continue
        known.add(key)
        repository.add(
            session,
            writes.new(
                PatientIdentifier,
                id=new_id(),
                tenant_id=tenant_id,
                patient_id=patient.id,
                value=ident.value,
                assigning_authority=ident.authority,
                type_code=ident.type_code,
            ),
        )


def _apply(patient: Patient, data: Demographics, *, creating: bool) -> bool:
    """Copy demographics: empty keeps the stored value, ``""`` clears it. True if changed."""
    changed = False
    for name in ("family_name", "given_name", "middle_name", "sex", "phone"):
        value = getattr(data, name)
        if value == HL7_NULL:
            value = ""
        elif not value:
            if not creating:
                continue
            value = ""
        if getattr(patient, name, None) != value:
            setattr(patient, name, value)
            changed = True
    if data.birth_date is not None and patient.birth_date != data.birth_date:
        patient.birth_date = data.birth_date
        changed = True
    if data.address and patient.address != data.address:
        patient.address = dict(data.address)
        changed = True
    elif creating:
        patient.address = dict(data.address)
    return changed
