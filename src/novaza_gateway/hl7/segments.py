"""HL7 segments to clinical records: PID, MRG, PV1, ORC/OBR/TQ1/IPC. Pure.

Each reader raises ``Hl7Error`` (answered AE) with the segment and field at fault.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from novaza_gateway.clinical.encounters import Visit
from novaza_gateway.clinical.orders import ProcedureRequest
from novaza_gateway.clinical.patients import Demographics, Identifier, PatientData
from novaza_gateway.hl7.parser import (
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    Hl7Error,
    Message,
    Segment,
    parse_timestamp,
)
from novaza_gateway.hl7.settings import Hl7Settings

DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def required_segment(message: Message, name: str) -> Segment:
    segment = message.segment(name)
    if segment is None:
        raise Hl7Error(
            f"The message has no {name} segment.", code=SEGMENT_SEQUENCE_ERROR, segment=name
        )
    return segment


def missing(segment: Segment, index: int, what: str) -> Hl7Error:
    return Hl7Error(
        f"{segment.name}-{index} ({what}) is required.",
        code=REQUIRED_FIELD_MISSING,
        segment=segment.name,
        sequence=segment.sequence,
        field=index,
    )


def timestamp(segment: Segment, index: int, component: int = 1) -> datetime | None:
    return parse_timestamp(
        segment.get(index, component),
        segment=segment.name,
        sequence=segment.sequence,
        field=index,
    )


def identifiers(segment: Segment, index: int) -> list[Identifier]:
    """A CX list: ID^check digit^scheme^assigning authority^identifier type."""
    found = []
    for rep in segment.repetitions(index):
        value = segment.component_of(rep, 1).strip()
        if value:
            authority = segment.component_of(rep, 4, 1) or segment.component_of(rep, 4, 2)
            kind = segment.component_of(rep, 5)
            found.append(Identifier(value[:128], authority.strip()[:128], kind[:16]))
    return found


def patient_identifiers(pid: Segment) -> list[Identifier]:
    """PID-3, or the old PID-2 when PID-3 is empty."""
    return identifiers(pid, 3) or identifiers(pid, 2)


def patient(pid: Segment) -> PatientData:
    idents = patient_identifiers(pid)
    if not idents:
        raise missing(pid, 3, "patient identifier list")
    born = timestamp(pid, 7)
    return PatientData(
        identifiers=idents,
        demographics=Demographics(
            family_name=pid.get(5, 1, 1)[:255],
            given_name=pid.get(5, 2)[:255],
            middle_name=pid.get(5, 3)[:255],
            birth_date=date(born.year, born.month, born.day) if born else None,
            sex=pid.get(8)[:8],
            address=_address(pid),
            phone=_phone(pid)[:64],
        ),
    )


def _address(pid: Segment) -> dict[str, str]:
    parts = ("street", "other", "city", "state", "postalCode", "country")
    address = {name: pid.get(11, n) for n, name in enumerate(parts, start=1)}
    return {k: v for k, v in address.items() if v}


def _phone(pid: Segment) -> str:
    plain = pid.get(13, 1)
    if plain:
        return plain
    area, local = pid.get(13, 6), pid.get(13, 7)
    return f"({area}) {local}" if area else local


def person(segment: Segment, index: int) -> str:
    """An XCN (id^family^given) as 'Family, Given (id)'."""
    ident, family, given = (segment.get(index, n) for n in (1, 2, 3))
    name = ", ".join(p for p in (family, given) if p)
    if name and ident:
        return f"{name} ({ident})"[:255]
    return (name or ident)[:255]


def visit(pv1: Segment) -> Visit | None:
    number = pv1.get(19)
    if not number:
        return None
    location = "^".join(p for p in (pv1.get(3, n) for n in (1, 2, 3, 4)) if p)
    prior = "^".join(p for p in (pv1.get(6, n) for n in (1, 2, 3, 4)) if p)
    return Visit(
        visit_number=number[:128],
        patient_class=pv1.get(2)[:8],
        location=location[:255],
        prior_location=prior[:255],
        attending=person(pv1, 7),
        admitted_at=timestamp(pv1, 44),
        discharged_at=timestamp(pv1, 45),
    )


def dicom_uid(value: str) -> str:
    """A DICOM UID (IPC-3 Study Instance UID) if the value is one, else ``""``."""
    return value if len(value) <= 64 and DICOM_UID.fullmatch(value) else ""


def procedure(
    orc: Segment,
    obr: Segment | None,
    tq1: Segment | None,
    ipc: Segment | None,
    settings: Hl7Settings,
) -> ProcedureRequest:
    """ORC (+ OBR, TQ1, IPC) as a procedure request; the order numbers are required."""

    def pick(*candidates: tuple[Segment | None, int, int]) -> str:
        for segment, index, component in candidates:
            if segment is not None:
                value = segment.get(index, component).strip()
                if value:
                    return value
        return ""

    placer = pick((orc, 2, 1), (obr, 2, 1))
    filler = pick((orc, 3, 1), (obr, 3, 1))
    if not placer and not filler:
        raise missing(orc, 2, "placer order number")
    code = pick((obr, 4, 1))
    modality = settings.modality_for(code, pick((ipc, 5, 1), (obr, 24, 1)))
    scheduled = None
    for segment, index, component in ((tq1, 7, 1), (obr, 27, 4), (orc, 7, 4)):
        if segment is not None and segment.get(index, component):
            scheduled = timestamp(segment, index, component)
            break
    return ProcedureRequest(
        placer_order_number=placer[:128],
        filler_order_number=filler[:128],
        accession_number=pick((ipc, 1, 1), (obr, 18, 1))[:64],
        requested_procedure_id=pick((ipc, 2, 1), (obr, 19, 1))[:64],
        requested_procedure_code=code[:64],
        requested_procedure_scheme=pick((obr, 4, 3))[:64],
        requested_procedure_description=pick((obr, 4, 2))[:255],
        scheduled_procedure_step_id=pick((ipc, 4, 1), (obr, 20, 1))[:64],
        study_instance_uid=dicom_uid(pick((ipc, 3, 1))),
        modality=modality,
        scheduled_start=scheduled,
        station_ae_title=settings.station_for(modality),
        description=pick((obr, 4, 2), (obr, 4, 1)),
        reason=pick((obr, 31, 2), (obr, 31, 1), (obr, 13, 1), (orc, 16, 2)),
        ordering_provider=person(orc, 12) or (person(obr, 16) if obr else ""),
    )
