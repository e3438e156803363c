"""The imaging area's JSON bodies (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime

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
    worklist_item: str | None = None  # filled once the clinical worklist lands
