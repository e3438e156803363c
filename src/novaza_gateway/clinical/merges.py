"""Merged patients (ADT A40) for readers outside the HL7 area: which identifiers name one
surviving patient.

A merge moves the merged patient's identifier rows to the survivor and keeps the merged row
with ``merged_into_id`` (``patients.merge``); identifiers therefore always hang on the last
survivor of a chain. A reader that keys data by an identifier value (the imaging archive
keys studies by DICOM Patient ID) asks here which values belong together: those of a patient
that other patients were merged into. Patients that were never part of a merge are not
answered, so their identifiers keep matching only themselves.

Both lookups are indexed (migration ``0008_imaging_qc_merges``: identifiers by
(tenant, value), patients by (tenant, merged_into_id)); a page of values costs one query, and
a second one only when one of them belongs to a survivor.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from novaza_gateway.clinical import repository
from novaza_gateway.clinical.models import Patient, PatientIdentifier


@dataclass(frozen=True, slots=True)
class MergedIdentifiers:
    """``owners``: each asked value that is an identifier of a survivor -> the survivors'
    ids (more than one only when one value is used under several assigning authorities);
    ``identifiers``: each such survivor -> all its identifiers (its own and those merged
    into it)."""

    owners: dict[str, set[str]] = field(default_factory=dict)
    identifiers: dict[str, list[PatientIdentifier]] = field(default_factory=dict)

    def values_of(self, value: str) -> set[str]:
        """Every identifier value of the survivor(s) ``value`` names (empty: none)."""
        return {
            ident.value
            for owner in self.owners.get(value, ())
            for ident in self.identifiers.get(owner, ())
        }


async def survivor_identifiers(
    session: AsyncSession, tenant_id: str, values: Collection[str]
) -> MergedIdentifiers:
    """For the identifier ``values`` (any assigning authority) that belong to a patient other
    patients were merged into: that survivor and all its identifiers."""
    wanted = sorted({v for v in values if v})
    if not wanted:
        return MergedIdentifiers()
    merged = aliased(Patient)
    absorbed = exists().where(
        merged.tenant_id == tenant_id, merged.merged_into_id == PatientIdentifier.patient_id
    )
    query = select(PatientIdentifier.value, PatientIdentifier.patient_id).where(
        PatientIdentifier.tenant_id == tenant_id,
        PatientIdentifier.value.in_(wanted),
        absorbed,
    )
    rows: Sequence[tuple[str, str]] = [
        (row[0], row[1]) for row in (await session.execute(query)).all()
    ]
    if not rows:
        return MergedIdentifiers()
    owners: dict[str, set[str]] = {}
    for value, patient_id in rows:
        owners.setdefault(value, set()).add(patient_id)
    survivors = sorted({patient_id for _, patient_id in rows})
    identifiers: dict[str, list[PatientIdentifier]] = {}
    for ident in await repository.identifiers_of_patients(session, tenant_id, survivors):
        identifiers.setdefault(ident.patient_id, []).append(ident)
    return MergedIdentifiers(owners, identifiers)
