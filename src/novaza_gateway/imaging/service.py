"""Imaging reads: QIDO searches, study summaries. Every read of patient data is audited.

For a tenant in proxy mode the study lives upstream: signed URLs and summaries ask the
upstream (``proxy_queries``) before touching the database, so no connection is held while
the upstream answers; QC and the worklist link come from the gateway's own tables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.config import ImagingConfig
from novaza_gateway.core import audit
from novaza_gateway.core.errors import ValidationFailed
from novaza_gateway.imaging import patient_merges, proxy_queries, qc, search, workflow, worklist
from novaza_gateway.imaging import repository as repo
from novaza_gateway.imaging.dicomweb.attributes import JsonDataset, first_value, tags
from novaza_gateway.imaging.dicomweb.qido import QidoQuery
from novaza_gateway.imaging.errors import SeriesNotFound, StudyNotFound
from novaza_gateway.imaging.schemas import (
    PatientOut,
    SeriesOut,
    SignedUrlOut,
    SignedUrlRequest,
    StudySummary,
)
from novaza_gateway.imaging.signing import Grant, UrlSigner

if TYPE_CHECKING:
    from novaza_gateway.imaging.proxy import ImagingProxy

MAX_AUDITED_STUDIES = 100
BIRTH_DATE, SEX = tags("PatientBirthDate", "PatientSex")


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
    merged = patient_merges.MergeLookup(session, tenant_id)  # ADT A40, resolved when read
    query = await merged.expand(query)
    hits, more = await search.run(session, tenant_id, query)
    coerced = await merged.coercions({hit.study.patient_id for hit in hits})
    studies = {
        hit.study.study_uid: coerced.get(hit.study.patient_id, hit.study.patient_id) for hit in hits
    }
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
    found = [search.hit_json(hit, query, base) for hit in hits]
    patient_merges.coerce(found, coerced)
    return found, more


async def signed_url(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    signer: UrlSigner,
    config: ImagingConfig,
    body: SignedUrlRequest,
    *,
    base: str,
    proxy: ImagingProxy | None = None,
) -> SignedUrlOut:
    ttl = body.expires_in or config.url_ttl_seconds
    if ttl > config.url_max_ttl_seconds:
        raise ValidationFailed.field("expiresIn", f"at most {config.url_max_ttl_seconds} seconds")
    study_uid = body.study_instance_uid
    after: dict[str, object] = {}
    upstream = await proxy_queries.upstream_of(proxy, tenant_id)
    if upstream is not None:
        assert proxy is not None
        found = await proxy_queries.find_study(proxy, upstream, study_uid)
        if found is None:
            raise StudyNotFound()
        patient_id = proxy_queries.patient_id_of(found)
        after["mode"] = "proxy"
    else:
        study = await repo.get_study(session, tenant_id, study_uid)
        if study is None:
            raise StudyNotFound()
        patient_id = study.patient_id
    grant = signer.sign(tenant_id, study_uid, ttl, actor.subject)
    token = signer.token(grant)
    audit.record(
        session,
        actor,
        "imaging.signed_url",
        "study",
        study_uid,
        tenant_id=tenant_id,
        patient_id=patient_id or None,
        after={"expiresAt": grant.expires_at, "kid": grant.kid, **after},
    )
    return SignedUrlOut(
        url=f"{base}/med/wado/studies/{study_uid}?token={token}",
        token=token,
        expires_at=datetime.fromtimestamp(grant.expires_at, UTC),
    )


def _date(value: str) -> str | None:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else None


def _time(value: str) -> str | None:
    return f"{value[:2]}:{value[2:4]}:{value[4:6]}" if len(value) >= 6 else None


async def study_summary(
    session: AsyncSession,
    actor: audit.Actor,
    tenant_id: str,
    study_uid: str,
    *,
    proxy: ImagingProxy | None = None,
) -> StudySummary:
    upstream = await proxy_queries.upstream_of(proxy, tenant_id)
    if upstream is not None:
        assert proxy is not None
        found = await proxy_queries.study(proxy, upstream, study_uid)
        if found is None:
            raise StudyNotFound()
        return await _upstream_summary(session, actor, tenant_id, found)
    study = await repo.get_study(session, tenant_id, study_uid)
    if study is None:
        raise StudyNotFound()
    series = await repo.list_series(session, tenant_id, study.id)
    link = await workflow.study_worklist_link(session, tenant_id, study)
    record = await repo.get_qc(session, tenant_id, study.study_uid)
    patient = study.attributes or {}
    audit.record(
        session,
        actor,
        "imaging.study_summary",
        "study",
        study.study_uid,
        tenant_id=tenant_id,
        patient_id=study.patient_id or None,
    )
    return StudySummary(
        study_instance_uid=study.study_uid,
        patient=PatientOut(
            id=study.patient_id,
            name=study.patient_name,
            birth_date=_date(str(first_value(patient, BIRTH_DATE) or "")),
            sex=str(first_value(patient, SEX) or "") or None,
        ),
        accession_number=study.accession_number,
        study_date=_date(study.study_date),
        study_time=_time(study.study_time),
        description=study.study_description,
        modalities=[m for m in study.modalities.split("|") if m],
        referring_physician=study.referring_physician,
        number_of_series=study.num_series,
        number_of_instances=study.num_instances,
        series=[
            SeriesOut(
                series_instance_uid=s.series_uid,
                modality=s.modality,
                series_number=s.series_number,
                description=s.series_description,
                number_of_instances=s.num_instances,
            )
            for s in series
        ],
        qc_status=qc.qc_status(record),
        qc=qc.qc_out(record),
        worklist_item=link,
    )


async def _upstream_summary(
    session: AsyncSession, actor: audit.Actor, tenant_id: str, found: proxy_queries.UpstreamStudy
) -> StudySummary:
    """The upstream's study with what the gateway itself knows of it merged in: the QC
    record (``imaging_qc``, by study UID) and the worklist item it fulfils."""
    record = await repo.get_qc(session, tenant_id, found.study_uid)
    item = await worklist.item_for_study(
        session, tenant_id, found.study_uid, found.accession_number
    )
    audit.record(
        session,
        actor,
        "imaging.study_summary",
        "study",
        found.study_uid,
        tenant_id=tenant_id,
        patient_id=found.patient_id,
        after={"mode": "proxy"},
    )
    return StudySummary(
        study_instance_uid=found.study_uid,
        patient=found.patient,
        accession_number=found.accession_number,
        study_date=found.study_date,
        study_time=found.study_time,
        description=found.description,
        modalities=found.modalities,
        referring_physician=found.referring_physician,
        number_of_series=found.number_of_series,
        number_of_instances=found.number_of_instances,
        series=found.series,
        qc_status=qc.qc_status(record),
        qc=qc.qc_out(record),
        worklist_item=workflow.worklist_link(item) if item is not None else None,
    )
