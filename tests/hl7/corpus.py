"""The fixture corpus in tests/fixtures/hl7: real-looking messages, good and bad."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def good() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.hl7") if not p.name.startswith("bad_"))


def bad() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if p.name.startswith("bad_"))


HL7_SETTINGS = {
    "registerUnknownPatients": True,
    "stationAeTitle": "RAD_DEFAULT",
    "modalityStations": {"CT": "CT_SCANNER_1"},
    "procedureModalities": {"US-ABD": "US"},
    "mllpRoutes": [{"receivingApplication": "NOVAZA", "receivingFacility": "RADIOLOGY"}],
}
