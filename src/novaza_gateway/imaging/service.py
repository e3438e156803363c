"""Imaging reads: QIDO searches, study summaries. Every read of patient data is audited."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core import audit
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging import search
from novaza_gateway.imaging.dicomweb.attributes import JsonDataset
from novaza_gateway.imaging.dicomweb.qido import QidoQuery
from novaza_gateway.imaging.errors import SeriesNotFound, StudyNotFound
from novaza_gateway.imaging.signing import Grant

MAX_AUDITED_STUDIES = 100


async def qido(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    query: QidoQuery,
    *,
    base: str,
    grant: Grant | None,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> tuple[list[JsonDataset], bool]:
    """Matches as DICOM JSON, and whether the page was cut. 404 for an unknown parent."""
    if grant is not None:
        query = query.with_study(grant.study_uid)  # belt and braces: the guard checked paths
    if study_uid is not None:
        if series_uid is not None:
            if await repo.get_series(session, tenant_id, study_uid, series_uid) is None:
                raise SeriesNotFound()
            query = query.with_series(series_uid)
        elif await repo.get_study(session, tenant_id, study_uid) is None:
            raise StudyNotFound()
        query = query.with_study(study_uid)
    hits, more = await search.run(session, tenant_id, query)
    studies = {hit.study.study_uid: hit.study.patient_id for hit in hits}
    patients = set(studies.values())
    audit.record(
        session,
        actor,
        f"imaging.search.{query.level}",
        query.level,
        study_uid,
        tenant_id=tenant_id,
        patient_id=patients.pop() if len(patients) == 1 else None,
        after={"results": len(hits), "studies": sorted(studies)[:MAX_AUDITED_STUDIES]},
    )
    return [search.hit_json(hit, query, base) for hit in hits], more
