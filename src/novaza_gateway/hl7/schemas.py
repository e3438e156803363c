from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from novaza_gateway.core.schemas import ApiModel, ApiResponse


class AckOut(ApiResponse):
    """The answer to an accepted message (AA): the ACK, and where the message is stored."""

    ack: str
    ack_code: str
    control_id: str
    message_id: str | None
    duplicate: bool


class PatientRef(ApiModel):
    """The patient: the gateway's patient id, or an identifier with its assigning authority."""

    id: str | None = Field(default=None, max_length=64)
    identifier: str | None = Field(default=None, max_length=128)
    assigning_authority: str = Field(default="", max_length=128)

    @model_validator(mode="after")
    def _one(self) -> PatientRef:
        if not (self.id or self.identifier):
            raise ValueError("give the patient's id or an identifier")
        return self


class OrderRef(ApiModel):
    accession_number: str = Field(min_length=1, max_length=64)
    study_instance_uid: str | None = Field(default=None, max_length=64, pattern=r"^[0-9.]+$")


class CodedIn(ApiModel):
    code: str = Field(min_length=1, max_length=64)
    text: str = Field(default="", max_length=255)
    coding_system: str = Field(default="", max_length=64)


class ObservationIn(ApiModel):
    code: str = Field(min_length=1, max_length=64)
    coding_system: str = Field(default="", max_length=64)
    text: str = Field(default="", max_length=255)
    value_type: Literal["NM", "ST", "TX", "CE"]
    value: str | float | CodedIn
    units: str = Field(default="", max_length=64)
    reference_range: str = Field(default="", max_length=64)
    abnormal_flag: str = Field(default="", max_length=8)
    status: Literal["P", "F", "C", "R", "D", "X"] = "F"

    @model_validator(mode="after")
    def _typed(self) -> ObservationIn:
        if self.value_type == "CE" and not isinstance(self.value, CodedIn):
            raise ValueError("a CE value is an object {code, text, codingSystem}")
        if self.value_type != "CE" and isinstance(self.value, CodedIn):
            raise ValueError(f"a {self.value_type} value is a string")
        if self.value_type == "NM" and not _is_number(self.value):
            raise ValueError("an NM value is a number")
        if isinstance(self.value, str) and len(self.value) > 65536:
            raise ValueError("the value is longer than 65536 characters")
        return self


def _is_number(value: object) -> bool:
    if isinstance(value, float | int):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


class SendOruIn(ApiModel):
    """A result to send: built into an ORU^R01, or ``message``: a ready ER7 ORU^R01."""

    patient: PatientRef | None = None
    order: OrderRef | None = None
    result_status: Literal["P", "F", "C"] = "F"
    observations: list[ObservationIn] = Field(default_factory=list, max_length=500)
    report_text: str | None = Field(default=None, max_length=262144)
    destination: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=1048576)

    @model_validator(mode="after")
    def _complete(self) -> SendOruIn:
        if self.message is None and (self.patient is None or self.order is None):
            raise ValueError("give patient and order, or a ready ORU^R01 in message")
        if self.message is None and not (self.observations or self.report_text):
            raise ValueError("give observations or reportText")
        return self


class QueuedOut(ApiResponse):
    message_id: str
    control_id: str
    status: str


class AttemptOut(ApiResponse):
    at: datetime
    outcome: str
    ack_code: str | None
    detail: str | None
    duration_ms: int


class MessageOut(ApiResponse):
    message_id: str
    direction: Literal["inbound", "outbound"]
    message_type: str
    control_id: str
    status: str
    ack_code: str | None
    created_at: datetime
    destination: str | None = None
    attempts: list[AttemptOut] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_error: str | None = None
    # inbound: the latest outcome (``ackCode`` stays the ACK the sender was answered)
    error_code: str | None = None
    patient_id: str | None = None
    processed_at: datetime | None = None
    reprocess_count: int = 0
    reprocessed_at: datetime | None = None
