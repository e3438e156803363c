"""ADT A40 merges in the embedded archive's answers: resolved when read, never re-keyed.

The HL7 area merges patients in the shared ``clinical`` package and never calls the imaging
area, so the index keeps each study's Patient ID as stored. Reads resolve the merge instead
(``clinical.merges``, ADR 0035):

- a QIDO ``PatientID=<value>`` (single value, no wildcard) naming a patient other patients
  were merged into matches every identifier of that survivor: its studies and those stored
  under the merged records' identifiers;
- QIDO answers and WADO metadata report such studies with the survivor's Patient ID in
  (0010,0020) — the identifier the worklist hands out for it (a medical record number
  first) — as dcm4chee coerces patient IDs on a merge. Nothing else is coerced.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.clinical import merges
from novaza_gateway.imaging.dicomweb.attributes import JsonDataset
from novaza_gateway.imaging.dicomweb.qido import Criterion, Equals, QidoQuery
from novaza_gateway.imaging.worklist import preferred_identifier

PATIENT_ID_TAG = "00100020"


class MergeLookup:
    """One request's view of merges: each identifier value is looked up once (a QIDO that
    widened its ``PatientID`` does not ask again for that value when coercing its page)."""

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self._asked: set[str] = set()
        self._found = merges.MergedIdentifiers()

    async def _lookup(self, values: Collection[str]) -> merges.MergedIdentifiers:
        new = {v for v in values if v} - self._asked
        if new:
            found = await merges.survivor_identifiers(self._session, self._tenant_id, new)
            self._asked |= new
            self._found.owners.update(found.owners)
            self._found.identifiers.update(found.identifiers)
        return self._found

    async def identifiers_of(self, value: str) -> set[str]:
        """Every identifier value of the survivor(s) ``value`` names, ``value`` included
        (empty when it names no patient others were merged into)."""
        found = await self._lookup({value})
        values = found.values_of(value)
        return values | {value} if values else set()

    async def expand(self, query: QidoQuery) -> QidoQuery:
        """The query with each exact ``PatientID`` value widened to all identifiers of the
        survivor it names (unchanged when it names no merged patient)."""
        asked = {
            value
            for criterion in query.criteria
            if criterion.keyword == "PatientID" and isinstance(criterion.condition, Equals)
            for value in criterion.condition.values
        }
        if not asked:
            return query
        found = await self._lookup(asked)
        if not any(value in found.owners for value in asked):
            return query
        criteria = []
        for criterion in query.criteria:
            condition = criterion.condition
            if criterion.keyword == "PatientID" and isinstance(condition, Equals):
                values = set(condition.values)
                for value in condition.values:
                    values |= found.values_of(value)
                criterion = Criterion("PatientID", Equals(tuple(sorted(values))))
            criteria.append(criterion)
        return QidoQuery(
            query.level,
            tuple(criteria),
            query.include_all,
            query.include,
            query.fuzzy,
            query.limit,
            query.offset,
        )

    async def coercions(self, stored: Collection[str]) -> dict[str, str]:
        """Stored Patient ID -> the survivor's Patient ID, for those of ``stored`` that
        belong to a patient others were merged into and are not the one it is known by. A
        value two survivors share (under different assigning authorities) stays as stored."""
        found = await self._lookup(stored)
        coerced: dict[str, str] = {}
        for value in stored:
            owners = found.owners.get(value, set())
            if len(owners) != 1:
                continue
            (owner,) = owners
            chosen = preferred_identifier(found.identifiers.get(owner, []))
            if chosen is not None and chosen.value != value:
                coerced[value] = chosen.value
        return coerced


def coerce(datasets: Iterable[JsonDataset], coerced: dict[str, str]) -> None:
    """Rewrite (0010,0020) in place where ``coerced`` names the stored value."""
    if not coerced:
        return
    for dataset in datasets:
        element = dataset.get(PATIENT_ID_TAG)
        if not isinstance(element, dict):
            continue
        values = element.get("Value")
        if isinstance(values, list) and values and values[0] in coerced:
            dataset[PATIENT_ID_TAG] = {**element, "Value": [coerced[values[0]]]}
