"""Index queries. Every one takes ``tenant_id``: a query without it is a bug."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.imaging.dicomweb.stow import InstanceInfo
from novaza_gateway.imaging.models import (
    ImagingInstance,
    ImagingPatient,
    ImagingQc,
    ImagingSeries,
    ImagingStudy,
)


async def get_study(session: AsyncSession, tenant_id: str, study_uid: str) -> ImagingStudy | None:
    query = select(ImagingStudy).where(
        ImagingStudy.tenant_id == tenant_id, ImagingStudy.study_uid == study_uid
    )
    return (await session.execute(query)).scalar_one_or_none()


async def get_series(
    session: AsyncSession, tenant_id: str, study_uid: str, series_uid: str
) -> tuple[ImagingStudy, ImagingSeries] | None:
    query = (
        select(ImagingStudy, ImagingSeries)
        .join(ImagingSeries, ImagingSeries.study_pk == ImagingStudy.id)
        .where(
            ImagingStudy.tenant_id == tenant_id,
            ImagingStudy.study_uid == study_uid,
            ImagingSeries.tenant_id == tenant_id,
            ImagingSeries.series_uid == series_uid,
        )
    )
    row = (await session.execute(query)).first()
    return (row[0], row[1]) if row else None


async def get_instance_by_uid(
    session: AsyncSession, tenant_id: str, sop_uid: str
) -> ImagingInstance | None:
    query = select(ImagingInstance).where(
        ImagingInstance.tenant_id == tenant_id, ImagingInstance.sop_instance_uid == sop_uid
    )
    return (await session.execute(query)).scalar_one_or_none()


async def list_series(
    session: AsyncSession, tenant_id: str, study_pk: str
) -> Sequence[ImagingSeries]:
    query = (
        select(ImagingSeries)
        .where(ImagingSeries.tenant_id == tenant_id, ImagingSeries.study_pk == study_pk)
        .order_by(ImagingSeries.series_number, ImagingSeries.series_uid)
    )
    return (await session.execute(query)).scalars().all()


async def list_instances(
    session: AsyncSession,
    tenant_id: str,
    *,
    study_pk: str,
    series_pk: str | None = None,
    sop_uid: str | None = None,
) -> Sequence[tuple[ImagingSeries, ImagingInstance]]:
    """Instances of a study (or one series, or one instance) in retrieve order."""
    query = (
        select(ImagingSeries, ImagingInstance)
        .join(ImagingInstance, ImagingInstance.series_pk == ImagingSeries.id)
        .where(
            ImagingSeries.tenant_id == tenant_id,
            ImagingInstance.tenant_id == tenant_id,
            ImagingInstance.study_pk == study_pk,
        )
        .order_by(
            ImagingSeries.series_number,
            ImagingSeries.series_uid,
            ImagingInstance.instance_number,
            ImagingInstance.sop_instance_uid,
        )
    )
    if series_pk is not None:
        query = query.where(ImagingInstance.series_pk == series_pk)
    if sop_uid is not None:
        query = query.where(ImagingInstance.sop_instance_uid == sop_uid)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


# ----------------------------------------------------------------------------- ingest


async def claim_write(session: AsyncSession, tenant_id: str) -> None:
    """Open the transaction with a write. On SQLite this takes the write lock first (waiting
    out the busy timeout) instead of failing at once when a read snapshot goes stale under a
    concurrent writer; elsewhere it changes nothing."""
    await session.execute(
        update(ImagingPatient)
        .where(ImagingPatient.tenant_id == tenant_id, ImagingPatient.id == "")
        .values(sex=ImagingPatient.sex)
        .execution_options(synchronize_session=False)
    )


async def upsert_patient(session: AsyncSession, tenant_id: str, info: InstanceInfo) -> str:
    query = select(ImagingPatient).where(
        ImagingPatient.tenant_id == tenant_id, ImagingPatient.patient_id == info.patient_id
    )
    patient = (await session.execute(query)).scalar_one_or_none()
    if patient is None:
        patient = ImagingPatient(
            id=new_id(),
            tenant_id=tenant_id,
            patient_id=info.patient_id,
            patient_name=info.patient_name,
            patient_name_norm=info.patient_name_norm,
            birth_date=info.birth_date,
            sex=info.sex,
            created_at=utcnow(),
        )
        session.add(patient)
        await session.flush()
    return patient.id


async def get_or_create_study(
    session: AsyncSession, tenant_id: str, info: InstanceInfo
) -> ImagingStudy:
    study = await get_study(session, tenant_id, info.study_uid)
    if study is not None:
        return study
    now = utcnow()
    study = ImagingStudy(
        id=new_id(),
        tenant_id=tenant_id,
        patient_pk=await upsert_patient(session, tenant_id, info),
        study_uid=info.study_uid,
        patient_id=info.patient_id,
        patient_name=info.patient_name,
        patient_name_norm=info.patient_name_norm,
        study_date=info.study_date,
        study_time=info.study_time,
        accession_number=info.accession_number,
        study_id=info.study_id,
        study_description=info.study_description,
        referring_physician=info.referring_physician,
        referring_physician_norm=info.referring_physician_norm,
        modalities="",
        num_series=0,
        num_instances=0,
        attributes=info.study_attributes,
        created_at=now,
        updated_at=now,
    )
    session.add(study)
    await session.flush()
    return study


async def get_or_create_series(
    session: AsyncSession, tenant_id: str, study: ImagingStudy, info: InstanceInfo
) -> tuple[ImagingSeries, bool]:
    query = select(ImagingSeries).where(
        ImagingSeries.tenant_id == tenant_id, ImagingSeries.series_uid == info.series_uid
    )
    series = (await session.execute(query)).scalar_one_or_none()
    if series is not None:
        return series, False
    series = ImagingSeries(
        id=new_id(),
        tenant_id=tenant_id,
        study_pk=study.id,
        series_uid=info.series_uid,
        modality=info.modality,
        series_number=info.series_number,
        series_description=info.series_description,
        num_instances=0,
        attributes=info.series_attributes,
        created_at=utcnow(),
    )
    session.add(series)
    await session.flush()
    return series, True


async def add_instance(
    session: AsyncSession,
    tenant_id: str,
    study: ImagingStudy,
    series: ImagingSeries,
    new_series: bool,
    info: InstanceInfo,
    *,
    size: int,
    sha256: str,
    storage_key: str,
) -> None:
    session.add(
        ImagingInstance(
            id=new_id(),
            tenant_id=tenant_id,
            study_pk=study.id,
            series_pk=series.id,
            sop_instance_uid=info.sop_instance_uid,
            sop_class_uid=info.sop_class_uid,
            instance_number=info.instance_number,
            transfer_syntax_uid=info.transfer_syntax_uid,
            rows=info.rows,
            columns=info.columns,
            number_of_frames=info.number_of_frames,
            pixel_offset=info.pixel_offset,
            pixel_length=info.pixel_length,
            frame_bytes=info.frame_bytes,
            size_bytes=size,
            sha256=sha256,
            storage_key=storage_key,
            attributes=info.instance_attributes,
            created_at=utcnow(),
        )
    )
    await session.flush()
    # Counters move in SQL (n = n + 1): concurrent stores into one study add up.
    await session.execute(
        update(ImagingSeries)
        .where(ImagingSeries.tenant_id == tenant_id, ImagingSeries.id == series.id)
        .values(num_instances=ImagingSeries.num_instances + 1)
    )
    modalities = (
        await session.execute(
            select(ImagingSeries.modality)
            .distinct()
            .where(ImagingSeries.tenant_id == tenant_id, ImagingSeries.study_pk == study.id)
        )
    ).scalars()
    joined = "".join(f"|{m}" for m in sorted(m for m in modalities if m))
    await session.execute(
        update(ImagingStudy)
        .where(ImagingStudy.tenant_id == tenant_id, ImagingStudy.id == study.id)
        .values(
            num_instances=ImagingStudy.num_instances + 1,
            num_series=ImagingStudy.num_series + (1 if new_series else 0),
            modalities=f"{joined}|" if joined else "",
            updated_at=utcnow(),
        )
    )


async def count_study_instances(session: AsyncSession, tenant_id: str, study_pk: str) -> int:
    query = select(func.count()).where(
        ImagingInstance.tenant_id == tenant_id, ImagingInstance.study_pk == study_pk
    )
    return int((await session.execute(query)).scalar_one())


# ----------------------------------------------------------------------------- QC, patients


async def confirm_qc(
    session: AsyncSession,
    tenant_id: str,
    study_uid: str,
    *,
    result: str,
    confirmed_by: str,
    confirmed_at: datetime,
    notes: str | None,
    patient_id: str,
    accession_number: str,
) -> bool:
    """Record the QC outcome if none is recorded yet; False when one already is. One
    INSERT that does nothing on the (tenant, study) key: of racing confirmations exactly
    one wins, whichever mode holds the study."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    outcome = await session.execute(
        insert(ImagingQc)
        .values(
            id=new_id(),
            tenant_id=tenant_id,
            study_uid=study_uid,
            result=result,
            confirmed_by=confirmed_by,
            confirmed_at=confirmed_at,
            notes=notes,
            patient_id=patient_id[:64],
            accession_number=accession_number[:64],
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "study_uid"])
    )
    return bool(getattr(outcome, "rowcount", 0) == 1)


async def get_qc(session: AsyncSession, tenant_id: str, study_uid: str) -> ImagingQc | None:
    query = select(ImagingQc).where(
        ImagingQc.tenant_id == tenant_id, ImagingQc.study_uid == study_uid
    )
    return (await session.execute(query)).scalar_one_or_none()


async def qc_results(
    session: AsyncSession, tenant_id: str, study_uids: Sequence[str]
) -> dict[str, str]:
    """The recorded QC result of each of these studies that has one."""
    if not study_uids:
        return {}
    query = select(ImagingQc.study_uid, ImagingQc.result).where(
        ImagingQc.tenant_id == tenant_id, ImagingQc.study_uid.in_(sorted(set(study_uids)))
    )
    return {row[0]: row[1] for row in (await session.execute(query)).all()}


async def has_patient(session: AsyncSession, tenant_id: str, patient_id: str) -> bool:
    query = select(ImagingPatient.id).where(
        ImagingPatient.tenant_id == tenant_id, ImagingPatient.patient_id == patient_id
    )
    return (await session.execute(query.limit(1))).first() is not None


async def studies_of_patients(
    session: AsyncSession,
    tenant_id: str,
    patient_ids: Sequence[str],
    *,
    after: tuple[str, str, str] | None,
    limit: int,
) -> Sequence[ImagingStudy]:
    """Studies whose DICOM Patient ID is one of ``patient_ids``, newest first (study date,
    time, then id descending); ``after`` is the last (date, time, id) of the previous page."""
    query = select(ImagingStudy).where(
        ImagingStudy.tenant_id == tenant_id, ImagingStudy.patient_id.in_(patient_ids)
    )
    if after is not None:
        day, time, pk = after
        query = query.where(
            (ImagingStudy.study_date < day)
            | ((ImagingStudy.study_date == day) & (ImagingStudy.study_time < time))
            | (
                (ImagingStudy.study_date == day)
                & (ImagingStudy.study_time == time)
                & (ImagingStudy.id < pk)
            )
        )
    query = query.order_by(
        ImagingStudy.study_date.desc(), ImagingStudy.study_time.desc(), ImagingStudy.id.desc()
    )
    return (await session.execute(query.limit(limit))).scalars().all()
