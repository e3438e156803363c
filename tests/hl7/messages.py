"""Small ER7 messages built per test: unique control ids and patients, any sender."""

from __future__ import annotations


def msh(kind: str, control: str, facility: str, receiver: str = "NOVAZA^RADIOLOGY") -> str:
    application, receiving_facility = receiver.split("^")
    return (
        f"MSH|^~\\&|SENDER|{facility}|{application}|{receiving_facility}|20260301083000||"
        f"{kind}|{control}|P|2.5.1"
    )


def a08(
    control: str,
    mrn: str,
    family: str = "DOE",
    facility: str = "STMARYS",
    receiver: str = "NOVAZA^RADIOLOGY",
) -> bytes:
    segments = [
        msh("ADT^A08^ADT_A01", control, facility, receiver),
        "EVN|A08|20260301083000",
        f"PID|1||{mrn}^^^{facility}^MR||{family}^JANE||19700101|F",
        "PV1|1|O",
    ]
    return ("\r".join(segments) + "\r").encode()


def orm(
    control: str,
    mrn: str,
    placer: str,
    procedures: int = 1,
    facility: str = "STMARYS",
    receiver: str = "NOVAZA^RADIOLOGY",
) -> bytes:
    """ORM^O01 NW: one order with ``procedures`` OBRs (one worklist item each)."""
    segments = [
        msh("ORM^O01^ORM_O01", control, facility, receiver),
        f"PID|1||{mrn}^^^{facility}^MR||DOE^JOHN||19700101|M",
        f"ORC|NW|{placer}^EPIC|{placer}F^RIS||SC",
    ]
    segments += [
        f"OBR|{n}|{placer}^EPIC|{placer}F^RIS|CT-HEAD^CT head^LOCAL{'|' * 14}"
        f"{placer}-{n}|RP{n}|SPS{n}||||CT"
        for n in range(1, procedures + 1)
    ]
    return ("\r".join(segments) + "\r").encode()
