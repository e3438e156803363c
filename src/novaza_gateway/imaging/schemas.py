"""The imaging area's JSON bodies (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from novaza_gateway.core.schemas import ApiModel, ApiResponse

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


class SignedUrlRequest(ApiModel):
    study_instance_uid: str = Field(alias="studyInstanceUID", pattern=UID_PATTERN, max_length=64)
    expires_in: int | None = Field(default=None, ge=10, description="Seconds; default 900")


class SignedUrlOut(ApiResponse):
    url: str
    token: str
    expires_at: datetime


class PatientOut(ApiResponse):
    id: str
    name: str
    birth_date: str | None
    sex: str | None


class SeriesOut(ApiResponse):
    series_instance_uid: str = Field(alias="seriesInstanceUID")
    modality: str
    series_number: int | None
    description: str
    number_of_instances: int


class StudySummary(ApiResponse):
    study_instance_uid: str = Field(alias="studyInstanceUID")
    patient: PatientOut
    accession_number: str
    study_date: str | None  # YYYY-MM-DD as the modality recorded it (no time zone)
    study_time: str | None  # HH:MM:SS
    description: str
    modalities: list[str]
    referring_physician: str
    number_of_series: int
    number_of_instances: int
    series: list[SeriesOut]
    qc_status: str
    qc: QcOut | None = None
    worklist_item: WorklistLinkOut | None = None


# ----------------------------------------------------------------------------- worklist, QC


class WorklistLinkOut(ApiResponse):
    """The worklist item a study fulfils (matched by Study Instance UID, else accession)."""

    id: str
    accession_number: str
    status: str
    scheduled_start: datetime | None
    href: str  # the worklist filtered to this item


class WorklistPatientOut(ApiResponse):
    id: str  # the gateway's patient id
    patient_id: str = Field(alias="patientID")  # the identifier modalities see (MRN)
    issuer_of_patient_id: str = Field(alias="issuerOfPatientID")
    name: str  # DICOM PN: Family^Given^Middle
    birth_date: str | None
    sex: str


class RequestedProcedureOut(ApiResponse):
    id: str
    code: str
    coding_scheme: str
    description: str


class ScheduledProcedureStepOut(ApiResponse):
    id: str
    modality: str
    station_ae_title: str = Field(alias="stationAETitle")
    start_date_time: datetime | None
    description: str


class WorklistItemOut(ApiResponse):
    id: str
    accession_number: str
    study_instance_uid: str = Field(alias="studyInstanceUID")
    status: str
    patient: WorklistPatientOut
    requested_procedure: RequestedProcedureOut
    scheduled_procedure_step: ScheduledProcedureStepOut
    placer_order_number: str
    filler_order_number: str
    ordering_provider: str
    reason: str


class QcConfirmRequest(ApiModel):
    study_instance_uid: str = Field(alias="studyInstanceUID", pattern=UID_PATTERN, max_length=64)
    result: Literal["passed", "failed"]
    notes: str | None = Field(default=None, max_length=4000)


class QcOut(ApiResponse):
    result: str
    confirmed_by: str
    confirmed_at: datetime
    notes: str | None


class QcConfirmOut(ApiResponse):
    study_instance_uid: str = Field(alias="studyInstanceUID")
    qc_status: str
    qc: QcOut
    worklist_item: WorklistLinkOut | None


class PatientStudyOut(ApiResponse):
    study_instance_uid: str = Field(alias="studyInstanceUID")
    patient_id: str = Field(alias="patientID")  # the DICOM Patient ID the study carries
    accession_number: str
    study_date: str | None
    study_time: str | None
    description: str
    modalities: list[str]
    number_of_series: int
    number_of_instances: int
    qc_status: str
