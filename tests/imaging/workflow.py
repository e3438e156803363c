"""Helpers for the Scheduled Workflow tests: a tenant fed by the HL7 fixture corpus."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from novaza_gateway.core.audit import AuditEvent
from tests.conftest import Gateway
from tests.hl7.corpus import HL7_SETTINGS, fixture
from tests.imaging.dicom import multipart

ORDERS = (
    "orm_o01_nw_v251_epic.hl7",  # ACC7001 CT 2026-03-01 16:00Z, O'Brien (MRN 100234)
    "orm_o01_nw_v24_procmap.hl7",  # ACC7002 US 03-02 08:00Z, O'Brien
    "orm_o01_nw_unknown_patient_v25.hl7",  # ACC8001 MR 03-11 09:00Z, Haddad (MRN 200500)
    "omi_o23_nw_v251.hl7",  # ACC9001 MG 03-13 07:45Z, O'Brien; IPC-3 names its study UID
)


async def workflow_tenant(
    gw: Gateway,
    slug: str = "stmarys",
    *,
    addons: tuple[str, ...] = ("hl7_fhir", "medical_imaging", "emr"),
    ae_titles: tuple[str, ...] = (),
    **imaging: Any,
) -> dict[str, str]:
    """A tenant with HL7 intake, imaging and EMR; answers its Authorization header."""
    settings: dict[str, Any] = {"hl7": HL7_SETTINGS}
    if ae_titles or imaging:
        settings["imaging"] = {"aeTitles": list(ae_titles), **imaging}
    await gw.create_tenant(
        slug,
        addons=list(addons),
        settings=settings,
        rateLimit={"ratePerSecond": 1000, "burst": 1000},
    )
    return gw.auth(slug)


async def hl7(gw: Gateway, auth: dict[str, str], kind: str, *names: str, **swap: str) -> None:
    for name in names:
        body = fixture(name)
        for old, new in swap.items():
            body = body.replace(old.encode(), new.encode())
        response = await gw.client.post(
            f"/med/hl7/{kind}",
            content=body,
            headers={**auth, "Content-Type": "application/hl7-v2"},
        )
        assert response.status_code == 200, (name, response.text)


async def schedule(gw: Gateway, auth: dict[str, str]) -> None:
    """The four orders of the corpus (after the patient's admission)."""
    await hl7(gw, auth, "adt", "adt_a01_v251_epic.hl7")
    await hl7(gw, auth, "orm", *ORDERS)


async def store(gw: Gateway, auth: dict[str, str], *parts: bytes) -> None:
    body, ctype = multipart(list(parts))
    response = await gw.client.post(
        "/med/stow/studies", content=body, headers={**auth, "Content-Type": ctype}
    )
    assert response.status_code == 200, response.text


async def audit_events(gw: Gateway, action: str) -> list[AuditEvent]:
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.at)
        )
        return list(rows.scalars())
