"""The clinical records the HL7 story in the fixture corpus leaves, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from novaza_gateway.clinical import patients, repository
from novaza_gateway.clinical.models import Encounter, Order, Patient, WorklistItem
from novaza_gateway.clinical.patients import Identifier
from tests.conftest import Gateway
from tests.hl7.corpus import fixture
from tests.hl7.test_http_intake import hl7_tenant, post


async def send(gw: Gateway, auth: dict[str, str], path: str, *names: str) -> None:
    for name in names:
        response = await post(gw, path, auth, fixture(name))
        assert response.status_code == 200, (name, response.text)


async def test_adt_story_registry_encounter_and_merge(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "adt", "adt_a01_v251_epic.hl7", "adt_a08_v24_cerner.hl7")
    db = gateway.app.state.db
    async with db.sessionmaker() as session:
        mrn = [Identifier("100234", "STMARYS")]
        patient = await patients.find(session, tenant_id, mrn)
        assert patient is not None
        assert (patient.family_name, patient.given_name) == ("O'Brien-Walsh", "Margaret")
        assert patient.birth_date is not None and patient.birth_date.isoformat() == "1958-04-12"
        assert patient.address["other"] == "Résidence Thérèse"  # ISO 8859-1 per MSH-18
        assert patient.sex == "F"
        ssn = await repository.identifier(session, tenant_id, "USSSA", "998877665")
        assert ssn is not None and ssn.patient_id == patient.id
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None
        assert (visit.status, visit.location) == ("admitted", "4WEST^415^A^STMARYS")
        assert visit.admitted_at == datetime(2026, 3, 1, 13, 25, tzinfo=UTC)
    await send(gateway, auth, "adt", "adt_a02_v251.hl7")
    async with db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None
        assert (visit.status, visit.location) == ("transferred", "ICU^02^1^STMARYS")
        assert visit.prior_location == "4WEST^415^A^STMARYS"
    await send(gateway, auth, "adt", "adt_a03_v251.hl7", "adt_a04_v251_duplicate_record.hl7")
    await send(gateway, auth, "orm", "orm_o01_nw_v251_epic.hl7")
    async with db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None and visit.status == "discharged"
        assert visit.discharged_at is not None
        duplicate = await patients.find(session, tenant_id, [Identifier("100999", "STMARYS")])
        assert duplicate is not None and duplicate.id != patient.id
    # an order placed on the duplicate record follows the survivor after the merge
    order_for_duplicate = (
        fixture("orm_o01_nw_unknown_patient_v25.hl7")
        .replace(b"200500^^^STMARYS", b"100999^^^STMARYS")
        .replace(b"EPO01000010", b"EPO01000011")
    )
    assert (await post(gateway, "orm", auth, order_for_duplicate)).status_code == 200
    await send(gateway, auth, "adt", "adt_a40_v251.hl7", "adt_a40_v251.hl7")
    async with db.sessionmaker() as session:
        resolved = await patients.find(session, tenant_id, [Identifier("100999", "STMARYS")])
        assert resolved is not None and resolved.id == patient.id
        old = await session.get(Patient, duplicate.id)
        assert old is not None and old.merged_into_id == patient.id
        items = (
            await session.execute(select(WorklistItem).where(WorklistItem.tenant_id == tenant_id))
        ).scalars()
        assert {i.accession_number: i.patient_id for i in items} == {
            "ACC7001": patient.id,
            "ACC8001": patient.id,
        }
        visits = (await session.execute(select(Encounter.visit_number, Encounter.patient_id))).all()
        assert set(visits) == {("V5001", patient.id), ("V5999", patient.id)}


async def test_cancel_admit_and_visit_rules(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "adt", "adt_a01_v25_cancel_target.hl7", "adt_a11_v25.hl7")
    async with gateway.app.state.db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5077")
        assert visit is not None and visit.status == "canceled"
    # a transfer of a canceled visit is AE; nothing it did is kept
    transfer = fixture("adt_a02_v251.hl7").replace(b"V5001", b"V5077").replace(b"A02000001", b"X1")
    response = await post(gateway, "adt", auth, transfer)
    assert response.status_code == 422
    assert "canceled" in response.json()["message"]
    async with gateway.app.state.db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5077")
        assert visit is not None and visit.status == "canceled"
        assert visit.location == "3EAST^301^A^STMARYS"


async def test_orders_to_worklist(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "adt", "adt_a01_v251_epic.hl7")
    await send(gateway, auth, "orm", "orm_o01_nw_v251_epic.hl7", "orm_o01_nw_v24_procmap.hl7")
    db = gateway.app.state.db
    async with db.sessionmaker() as session:
        ct = await repository.worklist_item(session, tenant_id, "ACC7001")
        assert ct is not None
        assert (ct.status, ct.modality, ct.station_ae_title) == ("scheduled", "CT", "CT_SCANNER_1")
        assert ct.placer_order_number == "ORD7001"
        assert ct.filler_order_number == "ORD7001F"
        assert ct.requested_procedure_code == "CT-CHEST-W"
        assert ct.requested_procedure_description == "CT chest with contrast"
        assert ct.requested_procedure_id == "RP7001"
        assert ct.scheduled_procedure_step_id == "SPS7001"
        assert ct.scheduled_start == datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
        assert ct.reason == "Suspected pulmonary embolism"
        assert ct.ordering_provider == "Kaur, Priya (1234)"
        us = await repository.worklist_item(session, tenant_id, "ACC7002")
        assert us is not None
        assert (us.modality, us.station_ae_title) == ("US", "RAD_DEFAULT")  # mapped procedure
        listed = await repository.worklist(session, tenant_id)
        assert [i.accession_number for i in listed] == ["ACC7001", "ACC7002"]
    await send(
        gateway,
        auth,
        "orm",
        "orm_o01_xo_v251.hl7",
        "orm_o01_sc_v251.hl7",
        "orm_o01_dc_v251.hl7",
    )
    async with db.sessionmaker() as session:
        ct = await repository.worklist_item(session, tenant_id, "ACC7001")
        assert ct is not None
        assert ct.requested_procedure_code == "CT-CHEST-WO"
        assert ct.scheduled_start == datetime(2026, 3, 1, 18, 30, tzinfo=UTC)
        assert ct.status == "in_progress"
        us = await repository.worklist_item(session, tenant_id, "ACC7002")
        assert us is not None and us.status == "discontinued"
        order = await repository.order(session, tenant_id, "ORD7002")
        assert order is not None and order.status == "discontinued"
        assert [i.accession_number for i in await repository.worklist(session, tenant_id)] == [
            "ACC7001"
        ]
    # a change to a discontinued order is AE; a repeat of NW is idempotent
    xo = fixture("orm_o01_xo_v251.hl7").replace(b"ORD7001", b"ORD7002").replace(b"003", b"093")
    assert (await post(gateway, "orm", auth, xo)).status_code == 422
    renw = fixture("orm_o01_nw_v251_epic.hl7").replace(b"EPO01000001", b"EPO01000099")
    assert (await post(gateway, "orm", auth, renw)).status_code == 200
    async with db.sessionmaker() as session:
        count = len(
            (await session.execute(select(Order).where(Order.tenant_id == tenant_id))).all()
        )
        assert count == 2


async def test_unknown_patient_order_registers_or_is_refused(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway, registerUnknownPatients=False)
    refused = await post(gateway, "orm", auth, fixture("orm_o01_nw_unknown_patient_v25.hl7"))
    assert refused.status_code == 422
    assert refused.json()["details"]["hl7ErrorCode"] == "204"
    other = await hl7_tenant(gateway, "riverside")
    accepted = await post(gateway, "orm", other, fixture("orm_o01_nw_unknown_patient_v25.hl7"))
    assert accepted.status_code == 200
    async with gateway.app.state.db.sessionmaker() as session:
        riverside = gateway.tenants["riverside"]["id"]
        patient = await patients.find(session, riverside, [Identifier("200500", "STMARYS")])
        assert patient is not None and patient.family_name == "Haddad"
        stmarys = gateway.tenants["stmarys"]["id"]
        assert await patients.find(session, stmarys, [Identifier("200500", "STMARYS")]) is None
        item = await repository.worklist_item(session, riverside, "ACC8001")
        assert item is not None and item.patient_id == patient.id
        assert item.modality == "MR"


async def test_v23_order_and_cancel(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway, "riverside")
    tenant_id = gateway.tenants["riverside"]["id"]
    await send(gateway, auth, "adt", "adt_a04_v23_meditech.hl7")
    await send(gateway, auth, "orm", "orm_o01_nw_v23_meditech.hl7")
    async with gateway.app.state.db.sessionmaker() as session:
        item = await repository.worklist_item(session, tenant_id, "RVACC3301")
        assert item is not None
        assert item.modality == "CR"
        assert item.scheduled_start == datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
        assert item.reason == "Cough for 3 weeks"
    await send(gateway, auth, "orm", "orm_o01_ca_v23.hl7")
    async with gateway.app.state.db.sessionmaker() as session:
        item = await repository.worklist_item(session, tenant_id, "RVACC3301")
        assert item is not None and item.status == "canceled"


async def test_imaging_moves_a_worklist_item_by_accession(gateway: Gateway) -> None:
    from novaza_gateway.clinical import orders
    from novaza_gateway.clinical.errors import InvalidTransition, OrderNotFound
    from novaza_gateway.core.audit import Actor

    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "orm", "orm_o01_nw_v251_epic.hl7")
    actor = Actor("tech-1", tenant_id)
    async with gateway.app.state.db.session_scope() as session:
        item = await orders.set_status_by_accession(
            session, actor, tenant_id, "ACC7001", "completed"
        )
        assert item.status == "completed"
    async with gateway.app.state.db.session_scope() as session:
        again = await orders.set_status_by_accession(
            session, actor, tenant_id, "ACC7001", "completed"
        )
        assert again.status == "completed"
        with pytest.raises(InvalidTransition):
            await orders.set_status_by_accession(session, actor, tenant_id, "ACC7001", "canceled")
        with pytest.raises(OrderNotFound):
            await orders.set_status_by_accession(
                session, actor, "other-tenant", "ACC7001", "completed"
            )


async def test_omi_o23_uses_ipc_and_tq1(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "orm", "omi_o23_nw_v251.hl7")
    async with gateway.app.state.db.sessionmaker() as session:
        item = await repository.worklist_item(session, tenant_id, "ACC9001")
        assert item is not None
        assert (item.modality, item.requested_procedure_id) == ("MG", "RP9001")
        assert item.scheduled_procedure_step_id == "SPS9001"
        assert item.scheduled_start == datetime(2026, 3, 13, 7, 45, tzinfo=UTC)
        assert item.station_ae_title == "RAD_DEFAULT"


async def test_cancel_transfer_and_cancel_discharge(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "adt", "adt_a01_v251_epic.hl7", "adt_a02_v251.hl7")
    a12 = (
        fixture("adt_a02_v251.hl7")
        .replace(b"ADT^A02^ADT_A02|EPA02000001", b"ADT^A12^ADT_A12|EPA12000001")
        .replace(b"EVN|A02", b"EVN|A12")
        .replace(b"ICU^02^1^STMARYS", b"4WEST^412^B^STMARYS")
    )
    assert (await post(gateway, "adt", auth, a12)).status_code == 200
    async with gateway.app.state.db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None
        assert (visit.status, visit.location) == ("admitted", "4WEST^412^B^STMARYS")
    await send(gateway, auth, "adt", "adt_a03_v251.hl7")
    a13 = (
        fixture("adt_a03_v251.hl7")
        .replace(b"ADT^A03^ADT_A03|EPA03000001", b"ADT^A13^ADT_A01|EPA13000001")
        .replace(b"EVN|A03", b"EVN|A13")
    )
    assert (await post(gateway, "adt", auth, a13)).status_code == 200
    async with gateway.app.state.db.sessionmaker() as session:
        visit = await repository.encounter(session, tenant_id, "V5001")
        assert visit is not None
        assert (visit.status, visit.discharged_at) == ("admitted", None)


async def test_worklist_query_filters_and_pages(gateway: Gateway) -> None:
    from novaza_gateway.clinical.repository import WorklistQuery

    auth = await hl7_tenant(gateway)
    tenant_id = gateway.tenants["stmarys"]["id"]
    await send(gateway, auth, "orm", "orm_o01_nw_v251_epic.hl7", "orm_o01_nw_v24_procmap.hl7")
    await send(gateway, auth, "orm", "omi_o23_nw_v251.hl7", "orm_o01_nw_unknown_patient_v25.hl7")
    no_time = (
        fixture("orm_o01_nw_v24_procmap.hl7")
        .replace(b"ORD7002", b"ORD7003")
        .replace(b"ACC7002", b"ACC7003")
        .replace(b"CRO01000002", b"CRO01000003")
        .replace(b"^^^20260302080000", b"")
    )
    assert (await post(gateway, "orm", auth, no_time)).status_code == 200
    async with gateway.app.state.db.sessionmaker() as session:
        everything = await repository.worklist(session, tenant_id)
        order = [i.accession_number for i in everything]
        assert order[:4] == ["ACC7001", "ACC7002", "ACC8001", "ACC9001"]
        assert order[4] == "ACC7003"  # no requested time: scheduled when received
        first = await repository.worklist(session, tenant_id, limit=2)
        last = first[-1]
        assert last.scheduled_start is not None
        rest = await repository.worklist(
            session, tenant_id, after=(last.scheduled_start, last.id), limit=10
        )
        assert [i.accession_number for i in [*first, *rest]] == order
        ct = await repository.worklist(session, tenant_id, WorklistQuery(modality="CT"))
        assert [i.accession_number for i in ct] == ["ACC7001"]
        station = WorklistQuery(station_ae_title="RAD_DEFAULT")
        assert len(await repository.worklist(session, tenant_id, station)) == 4
        window = WorklistQuery(
            start_from=datetime(2026, 3, 2, tzinfo=UTC), start_to=datetime(2026, 3, 12, tzinfo=UTC)
        )
        found = await repository.worklist(session, tenant_id, window)
        assert [i.accession_number for i in found] == ["ACC7002", "ACC8001"]
        assert await repository.worklist(session, "another-tenant") == []
