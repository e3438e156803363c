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


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: already escaped value}."""
    last = max(fields)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def _msh(result: Result, now: datetime) -> str:
    # MSH-1 is the field separator itself: the joined fields start at MSH-2.
    fields = {
        1: DEFAULT_SEPARATORS.encoding_characters,
        2: _e(result.sending_application),
        3: _e(result.sending_facility),
        4: _e(result.receiving_application),
        5: _e(result.receiving_facility),
        6: hl7_time(now),
        8: "ORU^R01^ORU_R01",
        9: _e(result.control_id),
        10: "P",
        11: VERSION,
    }
    return _segment("MSH", fields)


def _pid(patient: ResultPatient) -> str:
    cx = "~".join(f"{_e(v)}^^^{_e(a)}^MR" for v, a in patient.identifiers)
    name = "^".join(_e(p) for p in (patient.family_name, patient.given_name, patient.middle_name))
    birth = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    return _segment("PID", {1: "1", 3: cx, 5: name.rstrip("^"), 7: birth, 8: _e(patient.sex)})


def _obr(result: Result) -> str:
    order, ts = result.order, hl7_time(result.observed_at)
    fields = {
        1: "1",
        2: _e(order.placer_order_number),
        3: _e(order.filler_order_number),
        4: _coded(order.procedure),
        7: ts,
        18: _e(order.accession_number),
        22: ts,
        25: _e(result.result_status),
    }
    return _segment("OBR", fields)


def _obx(n: int, obs: Observation) -> str:
    value = _coded(obs.value) if isinstance(obs.value, Coded) else _e(obs.value)
    fields = {
        1: str(n),
        2: obs.value_type,
        3: _coded(obs.code),
        5: value,
        6: _e(obs.units),
        7: _e(obs.reference_range),
        8: _e(obs.abnormal_flag),
        11: _e(obs.status),
    }
    return _segment("OBX", fields)


def build_oru(result: Result, now: datetime) -> str:
    order = result.order
    segments = [
        _msh(result, now),
        _pid(result.patient),
        "PV1|1|N",
        f"ORC|RE|{_e(order.placer_order_number)}|{_e(order.filler_order_number)}||CM",
        _obr(result),
    ]
    segments += [_obx(n, obs) for n, obs in enumerate(result.observations, start=1)]
    if result.report_text:
        lines = result.report_text.replace("\r\n", "\n").split("\n")
        segments += [f"NTE|{n}||{_e(line)}" for n, line in enumerate(lines, start=1)]
    return "\r".join(segments) + "\r"
