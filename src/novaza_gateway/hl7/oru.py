"""Building an ORU^R01 (v2.5.1): MSH, PID, PV1, ORC, OBR, OBX..., NTE... Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from novaza_gateway.hl7.ack import hl7_time
from novaza_gateway.hl7.parser import DEFAULT_SEPARATORS, escape

VERSION = "2.5.1"


@dataclass(frozen=True, slots=True)
class Coded:
    code: str
    text: str = ""
    system: str = ""


@dataclass(frozen=True, slots=True)
class Observation:
    code: Coded
    value_type: str  # NM, ST, TX, CE
    value: str | Coded
    units: str = ""
    reference_range: str = ""
    abnormal_flag: str = ""
    status: str = "F"


@dataclass(frozen=True, slots=True)
class ResultPatient:
    identifiers: list[tuple[str, str]]  # (value, assigning authority)
    family_name: str = ""
    given_name: str = ""
    middle_name: str = ""
    birth_date: date | None = None
    sex: str = ""


@dataclass(frozen=True, slots=True)
class ResultOrder:
    placer_order_number: str
    filler_order_number: str
    accession_number: str
    procedure: Coded


@dataclass(frozen=True, slots=True)
class Result:
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    patient: ResultPatient
    order: ResultOrder
    result_status: str  # OBR-25: P, F, C
    observed_at: datetime
    observations: list[Observation] = field(default_factory=list)
    report_text: str = ""


def _e(value: str) -> str:
    return escape(value, DEFAULT_SEPARATORS)


def _coded(value: Coded) -> str:
    return "^".join([_e(value.code), _e(value.text), _e(value.system)]).rstrip("^")


def build_oru(result: Result, now: datetime) -> str:
    patient, order = result.patient, result.order
    cx = "~".join(
        f"{_e(v)}^^^{_e(a)}^MR" if a else f"{_e(v)}^^^^MR" for v, a in patient.identifiers
    )
    name = "^".join(_e(p) for p in (patient.family_name, patient.given_name, patient.middle_name))
    birth = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ts = hl7_time(result.observed_at)
    segments = [
        "|".join(
            [
                "MSH",
                DEFAULT_SEPARATORS.encoding_characters,
                _e(result.sending_application),
                _e(result.sending_facility),
                _e(result.receiving_application),
                _e(result.receiving_facility),
                hl7_time(now),
                "",
                "ORU^R01^ORU_R01",
                _e(result.control_id),
                "P",
                VERSION,
            ]
        ),
        f"PID|1||{cx}||{name.rstrip('^')}||{birth}|{_e(patient.sex)}",
        "PV1|1|N",
        f"ORC|RE|{_e(order.placer_order_number)}|{_e(order.filler_order_number)}||CM",
        "|".join(
            [
                "OBR",
                "1",
                _e(order.placer_order_number),
                _e(order.filler_order_number),
                _coded(order.procedure),
                "",
                "",
                ts,
                *[""] * 10,
                _e(order.accession_number),
                "",
                "",
                "",
                ts,
                "",
                "",
                _e(result.result_status),
            ]
        ),
    ]
    for n, obs in enumerate(result.observations, start=1):
        value = _coded(obs.value) if isinstance(obs.value, Coded) else _e(obs.value)
        segments.append(
            "|".join(
                [
                    "OBX",
                    str(n),
                    obs.value_type,
                    _coded(obs.code),
                    "",
                    value,
                    _e(obs.units),
                    _e(obs.reference_range),
                    _e(obs.abnormal_flag),
                    "",
                    "",
                    _e(obs.status),
                ]
            )
        )
    if result.report_text:
        lines = result.report_text.replace("\r\n", "\n").split("\n")
        for n, line in enumerate(lines, start=1):
            segments.append(f"NTE|{n}||{_e(line)}")
    return "\r".join(segments) + "\r"
