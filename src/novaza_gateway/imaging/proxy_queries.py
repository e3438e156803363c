"""Proxy mode outside DICOMweb: the gateway's own imaging endpoints asking a tenant's upstream.

``POST /med/imaging/signed-url``, ``GET /med/imaging/study/{uid}``, ``POST
/med/imaging/qc-confirm`` and ``GET /med/patient/{id}/studies`` read the embedded index for an
embedded tenant; for a tenant in proxy mode the studies live upstream, so they ask the
upstream with QIDO-RS through the tenant's pooled client (``UpstreamClients``): a study-level
search by ``StudyInstanceUID`` (and, for the summary, the study's series), or by
``PatientID`` for a patient's studies. Failures map as the
proxy maps them (``UPSTREAM_UNAVAILABLE`` with a reason; a 404 as ``STUDY_NOT_FOUND``); no
body or host of the upstream's ever reaches the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from novaza_gateway.imaging.dicomweb.attributes import JsonDataset, person_name, valid_uid
from novaza_gateway.imaging.proxy_audit import first_string
from novaza_gateway.imaging.proxy_errors import status_error, transport_error
from novaza_gateway.imaging.proxy_io import json_list, read_small
from novaza_gateway.imaging.schemas import PatientOut, SeriesOut
from novaza_gateway.imaging.upstream import Upstream

if TYPE_CHECKING:
    from novaza_gateway.imaging.proxy import ImagingProxy

DICOM_JSON = "application/dicom+json"
PATIENT_NAME, PATIENT_ID, BIRTH_DATE, SEX = "00100010", "00100020", "00100030", "00100040"
STUDY_UID, STUDY_DATE, STUDY_TIME, ACCESSION = "0020000D", "00080020", "00080030", "00080050"
MODALITIES, REFERRING, STUDY_DESCRIPTION = "00080061", "00080090", "00081030"
STUDY_SERIES, STUDY_INSTANCES = "00201206", "00201208"
SERIES_UID, MODALITY, SERIES_NUMBER = "0020000E", "00080060", "00200011"
SERIES_DESCRIPTION, SERIES_INSTANCES = "0008103E", "00201209"
STUDY_FIELDS = (
    PATIENT_NAME, PATIENT_ID, BIRTH_DATE, SEX, ACCESSION, STUDY_DATE, STUDY_TIME,
    STUDY_DESCRIPTION, MODALITIES, REFERRING, STUDY_SERIES, STUDY_INSTANCES,
)  # fmt: skip
SERIES_FIELDS = (SERIES_UID, MODALITY, SERIES_NUMBER, SERIES_DESCRIPTION, SERIES_INSTANCES)
PATIENT_STUDY_FIELDS = (
    PATIENT_ID, ACCESSION, STUDY_DATE, STUDY_TIME, STUDY_DESCRIPTION, MODALITIES,
    STUDY_SERIES, STUDY_INSTANCES,
)  # fmt: skip
QIDO_PAGE = 1000  # the most one upstream QIDO page is asked for (as the proxy caps them)
MAX_PATIENT_STUDIES = 5000  # per identifier: at most 5 pages


@dataclass(frozen=True, slots=True)
class UpstreamStudy:
    """A study as the upstream describes it, in the summary's terms."""

    study_uid: str
    patient: PatientOut
    accession_number: str
    study_date: str | None
    study_time: str | None
    description: str
    modalities: list[str]
    referring_physician: str
    number_of_series: int
    number_of_instances: int
    series: list[SeriesOut]

    @property
    def patient_id(self) -> str | None:
        return self.patient.id or None


async def upstream_of(proxy: ImagingProxy | None, tenant_id: str) -> Upstream | None:
    """The tenant's upstream; None in embedded mode (or when the app runs no proxy).
    A misconfigured or shared upstream raises, as it does for DICOMweb requests."""
    if proxy is None:
        return None
    return await proxy.directory.for_tenant(tenant_id)


async def find_study(proxy: ImagingProxy, upstream: Upstream, study_uid: str) -> JsonDataset | None:
    """The upstream's study-level QIDO answer for this study (None: it has no such study).
    The patient it names is remembered for the proxy's audit of later reads."""
    if not valid_uid(study_uid) or len(study_uid) > 64:
        return None  # not a UID: never put into an upstream query or path
    params: list[tuple[str, str]] = [("StudyInstanceUID", study_uid), ("limit", "1")]
    params += [("includefield", tag) for tag in STUDY_FIELDS]
    found = await qido(proxy, upstream, "/studies", params, level="study")
    for item in found:
        if isinstance(item, dict) and first_string(item, STUDY_UID) == study_uid:
            patient = first_string(item, PATIENT_ID)
            if patient:
                proxy.patients.remember(upstream.tenant_id, {study_uid: patient})
            return item
    return None


def patient_id_of(item: JsonDataset) -> str | None:
    return first_string(item, PATIENT_ID) or None


def accession_of(item: JsonDataset) -> str:
    return _text(item, ACCESSION)


@dataclass(frozen=True, slots=True)
class UpstreamPatientStudy:
    """One of a patient's studies as the upstream lists it (dates as stored: YYYYMMDD)."""

    study_uid: str
    patient_id: str
    accession_number: str
    study_date: str
    study_time: str
    description: str
    modalities: list[str]
    number_of_series: int
    number_of_instances: int


async def studies_of_patient(
    proxy: ImagingProxy, upstream: Upstream, patient_ids: Sequence[str]
) -> list[UpstreamPatientStudy]:
    """The upstream's studies whose Patient ID is exactly one of ``patient_ids``: a QIDO
    ``/studies?PatientID=`` per identifier, walked with ``limit``/``offset`` pages of
    ``QIDO_PAGE`` (QIDO has no order, so the caller sorts). The patients they name are
    remembered for the proxy's audit of later reads."""
    found: dict[str, UpstreamPatientStudy] = {}
    for patient_id in patient_ids:
        offset = 0
        while offset < MAX_PATIENT_STUDIES:
            params = [("PatientID", patient_id), ("limit", str(QIDO_PAGE))]
            params += [("offset", str(offset))] if offset else []
            params += [("includefield", tag) for tag in PATIENT_STUDY_FIELDS]
            page = await qido(proxy, upstream, "/studies", params, level="study")
            for item in page:
                if not isinstance(item, dict) or _text(item, PATIENT_ID) != patient_id:
                    continue  # a wildcard or list the upstream read into the value
                study = _patient_study(item)
                if study is not None:
                    found.setdefault(study.study_uid, study)
            if len(page) < QIDO_PAGE:
                break
            offset += QIDO_PAGE
    seen: dict[str, str | None] = {s.study_uid: s.patient_id for s in found.values()}
    proxy.patients.remember(upstream.tenant_id, seen)
    return list(found.values())


def _patient_study(item: JsonDataset) -> UpstreamPatientStudy | None:
    study_uid = _text(item, STUDY_UID)
    if not study_uid:
        return None
    return UpstreamPatientStudy(
        study_uid=study_uid,
        patient_id=_text(item, PATIENT_ID),
        accession_number=_text(item, ACCESSION),
        study_date=_text(item, STUDY_DATE),
        study_time=_text(item, STUDY_TIME),
        description=_text(item, STUDY_DESCRIPTION),
        modalities=_values(item, MODALITIES),
        number_of_series=_int(item, STUDY_SERIES) or 0,
        number_of_instances=_int(item, STUDY_INSTANCES) or 0,
    )


async def study(proxy: ImagingProxy, upstream: Upstream, study_uid: str) -> UpstreamStudy | None:
    """The study and its series from the upstream (None: no such study)."""
    found = await find_study(proxy, upstream, study_uid)
    if found is None:
        return None
    params = [("includefield", tag) for tag in SERIES_FIELDS]
    series = await qido(proxy, upstream, f"/studies/{study_uid}/series", params, level="study")
    return summarize(study_uid, found, [s for s in series if isinstance(s, dict)])


async def qido(
    proxy: ImagingProxy,
    upstream: Upstream,
    path: str,
    params: Sequence[tuple[str, str]],
    *,
    level: str,
) -> list[Any]:
    """One QIDO-RS search upstream, read whole (capped), as a list of DICOM JSON datasets."""
    client = proxy.clients.client(upstream)
    request = client.build_request(
        "GET",
        upstream.base_url + path,
        params=list(params),
        headers={"accept": DICOM_JSON, "accept-encoding": "identity"},
    )
    auth = upstream.auth or httpx.USE_CLIENT_DEFAULT
    try:
        try:
            response = await client.send(request, stream=True, auth=auth)
        except httpx.RemoteProtocolError:
            # A pooled connection the upstream had closed (Orthanc keeps them 1 s): once more.
            response = await client.send(request, stream=True, auth=auth)
        try:
            if response.status_code == 204:
                return []
            if response.status_code >= 300:
                raise status_error(response.status_code, "qido", level)
            body = await read_small(response)
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise transport_error(exc) from None
    return json_list(body)


def summarize(study_uid: str, item: JsonDataset, series: list[JsonDataset]) -> UpstreamStudy:
    series_out = sorted(
        (
            SeriesOut(
                series_instance_uid=_text(s, SERIES_UID),
                modality=_text(s, MODALITY),
                series_number=_int(s, SERIES_NUMBER),
                description=_text(s, SERIES_DESCRIPTION),
                number_of_instances=_int(s, SERIES_INSTANCES) or 0,
            )
            for s in series
            if _text(s, SERIES_UID)
        ),
        key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid),
    )
    modalities = _values(item, MODALITIES) or sorted({s.modality for s in series_out if s.modality})
    number_of_instances = _int(item, STUDY_INSTANCES)
    if number_of_instances is None:
        number_of_instances = sum(s.number_of_instances for s in series_out)
    return UpstreamStudy(
        study_uid=study_uid,
        patient=PatientOut(
            id=_text(item, PATIENT_ID),
            name=person_name(item.get(PATIENT_NAME)),
            birth_date=_date(_text(item, BIRTH_DATE)),
            sex=_text(item, SEX) or None,
        ),
        accession_number=_text(item, ACCESSION),
        study_date=_date(_text(item, STUDY_DATE)),
        study_time=_time(_text(item, STUDY_TIME)),
        description=_text(item, STUDY_DESCRIPTION),
        modalities=modalities,
        referring_physician=person_name(item.get(REFERRING)),
        number_of_series=_int(item, STUDY_SERIES) or len(series_out),
        number_of_instances=number_of_instances,
        series=series_out,
    )


def _text(item: JsonDataset, tag: str) -> str:
    return first_string(item, tag) or ""


def _values(item: JsonDataset, tag: str) -> list[str]:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [str(v) for v in values if isinstance(v, str) and v] if isinstance(values, list) else []


def _int(item: JsonDataset, tag: str) -> int | None:
    value = first_string(item, tag)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _date(value: str) -> str | None:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else None


def _time(value: str) -> str | None:
    return f"{value[:2]}:{value[2:4]}:{value[4:6]}" if len(value) >= 6 else None
