"""Merged patients (ADT A40) for readers outside the HL7 area: which identifiers name one
surviving patient.

A merge moves the merged patient's identifier rows to the survivor and keeps the merged row
with ``merged_into_id`` (``patients.merge``); identifiers therefore always hang on the last
survivor of a chain. A reader that keys data by an identifier value (the imaging archive
keys studies by DICOM Patient ID) asks here which values belong together: those of a patient
that other patients were merged into. Patients that were never part of a merge are not
answered, so their identifiers keep matching only themselves.

Both lookups are indexed (migration ``0008_imaging_qc_merges``: identifiers by
(tenant, value), patients by (tenant, merged_into_id)); a page of values costs one query.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, String, and_, any_, bindparam, exists, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from novaza_gateway.clinical.models import Patient, PatientIdentifier


@dataclass(frozen=True, slots=True)
class SurvivorIdentifier:
    """One identifier of a survivor, as plain values (no ORM object to load)."""

    id: str
    patient_id: str
    value: str
    assigning_authority: str
    type_code: str


@dataclass(frozen=True, slots=True)
class MergedIdentifiers:
    """``owners``: each asked value that is an identifier of a survivor -> the survivors'
    ids (more than one only when one value is used under several assigning authorities);
    ``identifiers``: each such survivor -> all its identifiers (its own and those merged
    into it)."""

    owners: dict[str, set[str]] = field(default_factory=dict)
    identifiers: dict[str, list[SurvivorIdentifier]] = field(default_factory=dict)

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
    patients were merged into: that survivor and all its identifiers. One query."""
    wanted = sorted({v for v in values if v})
    if not wanted:
        return MergedIdentifiers()
    hit = aliased(PatientIdentifier)
    merged = aliased(Patient)
    absorbed = exists().where(
        merged.tenant_id == tenant_id, merged.merged_into_id == hit.patient_id
    )
    query = (
        select(
            hit.value,
            PatientIdentifier.id,
            PatientIdentifier.patient_id,
            PatientIdentifier.value,
            PatientIdentifier.assigning_authority,
            PatientIdentifier.type_code,
        )
        .join(
            PatientIdentifier,
            and_(
                PatientIdentifier.tenant_id == tenant_id,
                PatientIdentifier.patient_id == hit.patient_id,
            ),
        )
        .where(hit.tenant_id == tenant_id, _one_of(session, hit.value, wanted), absorbed)
    )
    found = MergedIdentifiers()
    seen: set[str] = set()
    for row in (await session.execute(query)).tuples():
        value, ident = row[0], SurvivorIdentifier(*row[1:])
        found.owners.setdefault(value, set()).add(ident.patient_id)
        if ident.id not in seen:
            seen.add(ident.id)
            found.identifiers.setdefault(ident.patient_id, []).append(ident)
    return found


def _one_of(
    session: AsyncSession, column: InstrumentedAttribute[str], values: list[str]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(:array)``: one statement (and plan)
    whatever the number of values, where an IN list is planned anew for each length."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("merge_values", values, type_=ARRAY(String())))
    return column.in_(values)
