"""QIDO-RS over the index: a ``QidoQuery`` as SQL, rows as DICOM JSON. Every query by tenant.

Wildcards are case-sensitive as DICOM asks (GLOB on SQLite, LIKE on PostgreSQL); fuzzy
person-name matching compares the normalized name columns (upper case, no accents).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from novaza_gateway.imaging.dicomweb import attributes as attrs
from novaza_gateway.imaging.dicomweb.qido import (
    Condition,
    Equals,
    FuzzyName,
    QidoQuery,
    Range,
    Wildcard,
    glob_pattern,
    like_pattern,
)
from novaza_gateway.imaging.models import ImagingInstance, ImagingSeries, ImagingStudy

Column = InstrumentedAttribute[Any]
AnySelect = Select[*tuple[Any, ...]]

COLUMNS: dict[str, Column] = {
    "PatientID": ImagingStudy.patient_id,
    "PatientName": ImagingStudy.patient_name,
    "StudyInstanceUID": ImagingStudy.study_uid,
    "StudyDate": ImagingStudy.study_date,
    "StudyTime": ImagingStudy.study_time,
    "AccessionNumber": ImagingStudy.accession_number,
    "StudyID": ImagingStudy.study_id,
    "StudyDescription": ImagingStudy.study_description,
    "ReferringPhysicianName": ImagingStudy.referring_physician,
    "SeriesInstanceUID": ImagingSeries.series_uid,
    "Modality": ImagingSeries.modality,
    "SeriesNumber": ImagingSeries.series_number,
    "SeriesDescription": ImagingSeries.series_description,
    "SOPInstanceUID": ImagingInstance.sop_instance_uid,
    "SOPClassUID": ImagingInstance.sop_class_uid,
    "InstanceNumber": ImagingInstance.instance_number,
}
NORMALIZED: dict[str, Column] = {
    "PatientName": ImagingStudy.patient_name_norm,
    "ReferringPhysicianName": ImagingStudy.referring_physician_norm,
}
# Patient attributes without their own column are matched in the stored JSON by the service.
JSON_ONLY = {"PatientBirthDate": "00100030", "PatientSex": "00100040"}


@dataclass(frozen=True, slots=True)
class Hit:
    study: ImagingStudy
    series: ImagingSeries | None = None
    instance: ImagingInstance | None = None


def _wildcard(column: Column, pattern: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        return column.op("GLOB")(glob_pattern(pattern))
    return column.like(like_pattern(pattern), escape="\\")


def _condition(keyword: str, condition: Condition, dialect: str) -> ColumnElement[bool]:
    if keyword == "ModalitiesInStudy":
        column = ImagingStudy.modalities
        if isinstance(condition, Wildcard):
            return column.like(f"%|{like_pattern(condition.pattern)}|%", escape="\\")
        assert isinstance(condition, Equals)
        return or_(*(column.like(f"%|{like_pattern(v)}|%", escape="\\") for v in condition.values))
    if isinstance(condition, FuzzyName):
        column = NORMALIZED[keyword]
        if "*" in condition.value or "?" in condition.value:
            return column.like(like_pattern(condition.value), escape="\\")
        prefix = like_pattern(condition.value)
        return or_(column.like(f"{prefix}%", escape="\\"), column.like(f"% {prefix}%", escape="\\"))
    column = COLUMNS[keyword]
    if isinstance(condition, Wildcard):
        return _wildcard(column, condition.pattern, dialect)
    if isinstance(condition, Range):
        bounds = []
        if condition.low is not None:
            bounds.append(column >= condition.low)
        if condition.high is not None:
            bounds.append(column <= condition.high)
        return and_(column != "", *bounds)
    values: list[Any] = list(condition.values)
    if keyword in ("SeriesNumber", "InstanceNumber"):
        values = [int(v) for v in values]
    return column == values[0] if len(values) == 1 else column.in_(values)


def build(query: QidoQuery, tenant_id: str, dialect: str) -> AnySelect:
    if query.level == "study":
        stmt: AnySelect = select(ImagingStudy).where(ImagingStudy.tenant_id == tenant_id)
        order: list[Any] = [ImagingStudy.study_date.desc(), ImagingStudy.study_time.desc()]
        order.append(ImagingStudy.study_uid)
    elif query.level == "series":
        stmt = (
            select(ImagingStudy, ImagingSeries)
            .join(ImagingSeries, ImagingSeries.study_pk == ImagingStudy.id)
            .where(ImagingStudy.tenant_id == tenant_id, ImagingSeries.tenant_id == tenant_id)
        )
        order = [ImagingStudy.study_uid, ImagingSeries.series_number, ImagingSeries.series_uid]
    else:
        stmt = (
            select(ImagingStudy, ImagingSeries, ImagingInstance)
            .join(ImagingSeries, ImagingSeries.study_pk == ImagingStudy.id)
            .join(ImagingInstance, ImagingInstance.series_pk == ImagingSeries.id)
            .where(
                ImagingStudy.tenant_id == tenant_id,
                ImagingSeries.tenant_id == tenant_id,
                ImagingInstance.tenant_id == tenant_id,
            )
        )
        order = [
            ImagingStudy.study_uid,
            ImagingSeries.series_number,
            ImagingSeries.series_uid,
            ImagingInstance.instance_number,
            ImagingInstance.sop_instance_uid,
        ]
    for criterion in query.criteria:
        if criterion.keyword in JSON_ONLY:
            continue
        stmt = stmt.where(_condition(criterion.keyword, criterion.condition, dialect))
    return stmt.order_by(*order)


async def run(session: AsyncSession, tenant_id: str, query: QidoQuery) -> tuple[list[Hit], bool]:
    """The page of hits and whether more matched beyond it."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    stmt = build(query, tenant_id, dialect)
    json_only = [c for c in query.criteria if c.keyword in JSON_ONLY]
    if not json_only:
        stmt = stmt.offset(query.offset).limit(query.limit + 1)
        hits = [_hit(row) for row in (await session.execute(stmt)).all()]
        return hits[: query.limit], len(hits) > query.limit
    # Rare keys (birth date, sex) filter in Python over the SQL-matched rows.
    matched = [
        hit
        for hit in (_hit(row) for row in (await session.execute(stmt)).all())
        if all(_json_match(hit.study.attributes, c.keyword, c.condition) for c in json_only)
    ]
    page = matched[query.offset : query.offset + query.limit]
    return page, len(matched) > query.offset + query.limit


def _hit(row: Any) -> Hit:
    return Hit(*row)


def _json_match(dataset: attrs.JsonDataset, keyword: str, condition: Condition) -> bool:
    values = (dataset.get(JSON_ONLY[keyword]) or {}).get("Value") or [""]
    value = str(values[0])
    if isinstance(condition, Equals):
        return value in condition.values
    if isinstance(condition, Range):
        return bool(value) and (condition.low or "") <= value <= (condition.high or "99999999")
    if isinstance(condition, Wildcard):
        return fnmatch.fnmatchcase(value, condition.pattern.replace("[", "[[]"))
    return False


# ------------------------------------------------------------------------- DICOM JSON


def study_json(study: ImagingStudy, base: str) -> attrs.JsonDataset:
    out = dict(study.attributes or {})
    modalities = [m for m in study.modalities.split("|") if m]
    out[attrs.key(attrs.MODALITIES_IN_STUDY)] = attrs.element(attrs.MODALITIES_IN_STUDY, modalities)
    out[attrs.key(attrs.STUDY_SERIES_COUNT)] = attrs.element(
        attrs.STUDY_SERIES_COUNT, [study.num_series]
    )
    out[attrs.key(attrs.STUDY_INSTANCE_COUNT)] = attrs.element(
        attrs.STUDY_INSTANCE_COUNT, [study.num_instances]
    )
    out[attrs.key(attrs.INSTANCE_AVAILABILITY)] = attrs.element(
        attrs.INSTANCE_AVAILABILITY, ["ONLINE"]
    )
    out[attrs.key(attrs.STUDY_UID)] = attrs.element(attrs.STUDY_UID, [study.study_uid])
    out[attrs.key(attrs.RETRIEVE_URL)] = attrs.element(
        attrs.RETRIEVE_URL, [f"{base}/med/wado/studies/{study.study_uid}"]
    )
    return out


def series_json(study: ImagingStudy, series: ImagingSeries, base: str) -> attrs.JsonDataset:
    out = dict(series.attributes or {})
    out[attrs.key(attrs.SERIES_UID)] = attrs.element(attrs.SERIES_UID, [series.series_uid])
    out[attrs.key(attrs.SERIES_INSTANCE_COUNT)] = attrs.element(
        attrs.SERIES_INSTANCE_COUNT, [series.num_instances]
    )
    out[attrs.key(attrs.RETRIEVE_URL)] = attrs.element(
        attrs.RETRIEVE_URL,
        [f"{base}/med/wado/studies/{study.study_uid}/series/{series.series_uid}"],
    )
    return out


def hit_json(hit: Hit, query: QidoQuery, base: str) -> attrs.JsonDataset:
    """One result: the level's default attributes, the matched and included ones (or all)."""
    available = study_json(hit.study, base)
    defaults = attrs.STUDY_DEFAULTS
    if hit.series is not None:
        available.update(series_json(hit.study, hit.series, base))
        defaults = attrs.SERIES_DEFAULTS
    if hit.instance is not None and hit.series is not None:
        instance = hit.instance
        available.update(instance.attributes or {})
        available[attrs.key(attrs.RETRIEVE_URL)] = attrs.element(
            attrs.RETRIEVE_URL,
            [
                f"{base}/med/wado/studies/{hit.study.study_uid}/series/"
                f"{hit.series.series_uid}/instances/{instance.sop_instance_uid}"
            ],
        )
        defaults = attrs.INSTANCE_DEFAULTS
    if query.include_all:
        return dict(sorted(available.items()))
    wanted = {attrs.key(t) for t in (*defaults, *query.include)}
    return {k: v for k, v in sorted(available.items()) if k in wanted}
