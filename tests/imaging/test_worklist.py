"""GET /med/imaging/worklist: items the HL7 orders scheduled, filters, pages, audit, tenants."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gateway
from tests.imaging.workflow import audit_events, hl7, schedule, workflow_tenant

WORKLIST = "/med/imaging/worklist"


async def listed(gw: Gateway, auth: dict[str, str], **params: Any) -> list[str]:
    response = await gw.client.get(WORKLIST, params=params, headers=auth)
    assert response.status_code == 200, response.text
    return [item["accessionNumber"] for item in response.json()["data"]]


async def test_items_carry_patient_procedure_and_step(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    response = await gateway.client.get(
        WORKLIST, params={"accessionNumber": "ACC7001"}, headers={**auth, "X-Request-Id": "wl-1"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nextCursor"] is None
    (item,) = body["data"]
    assert item["status"] == "scheduled"
    assert item["studyInstanceUID"].startswith("2.25.")  # made up: the order named none
    patient = item["patient"]
    assert (patient["patientID"], patient["issuerOfPatientID"]) == ("100234", "STMARYS")
    assert patient["name"] == "O'Brien^Margaret^Ann"
    assert (patient["birthDate"], patient["sex"]) == ("1958-04-12", "F")
    assert item["requestedProcedure"] == {
        "id": "RP7001",
        "code": "CT-CHEST-W",
        "codingScheme": "STMARYSPROC",
        "description": "CT chest with contrast",
    }
    assert item["scheduledProcedureStep"] == {
        "id": "SPS7001",
        "modality": "CT",
        "stationAETitle": "CT_SCANNER_1",
        "startDateTime": "2026-03-01T16:00:00Z",
        "description": "CT chest with contrast",
    }
    assert (item["placerOrderNumber"], item["fillerOrderNumber"]) == ("ORD7001", "ORD7001F")
    assert item["reason"] == "Suspected pulmonary embolism"
    mg = await gateway.client.get(WORKLIST, params={"accessionNumber": "ACC9001"}, headers=auth)
    assert mg.json()["data"][0]["studyInstanceUID"] == "1.2.840.113619.2.55.3.9001"  # IPC-3
    event, _ = await audit_events(gateway, "imaging.worklist")
    assert (event.actor, event.caller_request_id, event.outcome) == ("user-1", "wl-1", "success")
    assert event.tenant_id == gateway.tenants["stmarys"]["id"]
    assert event.patient_id == patient["id"]
    assert event.after == {"channel": "rest", "results": 1, "accessionNumbers": ["ACC7001"]}


async def test_filters(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    everything = ["ACC7001", "ACC7002", "ACC8001", "ACC9001"]
    assert await listed(gateway, auth) == everything  # by scheduled start
    assert await listed(gateway, auth, modality="MR") == ["ACC8001"]
    assert await listed(gateway, auth, modality="M*") == ["ACC8001", "ACC9001"]
    assert await listed(gateway, auth, stationAETitle="CT_SCANNER_1") == ["ACC7001"]
    assert await listed(gateway, auth, stationAETitle="RAD_DEFAULT") == everything[1:]
    window = {"scheduledFrom": "2026-03-02T00:00:00Z", "scheduledTo": "2026-03-12T00:00:00Z"}
    assert await listed(gateway, auth, **window) == ["ACC7002", "ACC8001"]
    assert await listed(gateway, auth, scheduledFrom="2026-03-11T09:00:00") == everything[2:]
    assert await listed(gateway, auth, scheduledTo="2026-03-01T16:00:00+00:00") == []
    assert await listed(gateway, auth, patientID="200500") == ["ACC8001"]
    assert await listed(gateway, auth, patientID="100234") == ["ACC7001", "ACC7002", "ACC9001"]
    assert await listed(gateway, auth, patientID="100234", issuerOfPatientID="OTHER") == []
    assert await listed(gateway, auth, patientID="998877665") == everything[:2] + everything[3:]
    response = await gateway.client.get(WORKLIST, params={"patientID": "200500"}, headers=auth)
    gateway_id = response.json()["data"][0]["patient"]["id"]
    assert await listed(gateway, auth, patientID=gateway_id) == ["ACC8001"]
    assert await listed(gateway, auth, patientID="nobody") == []
    assert await listed(gateway, auth, patientName="HADDAD") == ["ACC8001"]
    assert await listed(gateway, auth, patientName="o'b*^marg*") == [
        "ACC7001",
        "ACC7002",
        "ACC9001",
    ]
    assert await listed(gateway, auth, accessionNumber="ACC70*") == ["ACC7001", "ACC7002"]
    mg_uid = "1.2.840.113619.2.55.3.9001"
    assert await listed(gateway, auth, studyInstanceUID=mg_uid) == ["ACC9001"]
    # status: open items by default; SC moves ACC7001 to in_progress, DC discontinues ACC7002
    await hl7(gateway, auth, "orm", "orm_o01_sc_v251.hl7", "orm_o01_dc_v251.hl7")
    assert await listed(gateway, auth) == ["ACC7001", "ACC8001", "ACC9001"]
    assert await listed(gateway, auth, status="in_progress") == ["ACC7001"]
    assert await listed(gateway, auth, status="discontinued,scheduled") == everything[1:]
    bad = await gateway.client.get(WORKLIST, params={"status": "done"}, headers=auth)
    assert (bad.status_code, bad.json()["code"]) == (422, "VALIDATION_FAILED")
    assert bad.json()["details"]["errors"][0]["path"] == "status"
    bad_date = await gateway.client.get(WORKLIST, params={"scheduledFrom": "soon"}, headers=auth)
    assert bad_date.status_code == 422


async def test_cursor_pages_cover_the_list_once(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        body = (await gateway.client.get(WORKLIST, params=params, headers=auth)).json()
        seen += [i["accessionNumber"] for i in body["data"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == ["ACC7001", "ACC7002", "ACC8001", "ACC9001"]
    assert pages == 4
    audited = await audit_events(gateway, "imaging.worklist")
    assert [(e.after or {})["accessionNumbers"] for e in audited] == [[a] for a in seen]
    page = await gateway.client.get(WORKLIST, params={"limit": 3}, headers=auth)
    assert len(page.json()["data"]) == 3 and page.json()["nextCursor"]
    forged = await gateway.client.get(WORKLIST, params={"cursor": "bm9wZQ"}, headers=auth)
    assert (forged.status_code, forged.json()["code"]) == (422, "VALIDATION_FAILED")


async def test_tenants_see_only_their_worklist(gateway: Gateway) -> None:
    mine = await workflow_tenant(gateway, "stmarys")
    theirs = await workflow_tenant(gateway, "riverside")
    await schedule(gateway, mine)
    assert await listed(gateway, theirs) == []
    assert await listed(gateway, theirs, accessionNumber="ACC7001") == []
    assert await listed(gateway, theirs, patientID="100234") == []
    response = await gateway.client.get(WORKLIST, params={"patientID": "100234"}, headers=mine)
    patient_id = response.json()["data"][0]["patient"]["id"]
    assert await listed(gateway, theirs, patientID=patient_id) == []  # another tenant's id
    # the same order in the other tenant is another item
    await hl7(gateway, theirs, "orm", "orm_o01_nw_v251_epic.hl7")
    assert await listed(gateway, theirs) == ["ACC7001"]
    ours = await gateway.client.get(WORKLIST, params={"accessionNumber": "ACC7001"}, headers=mine)
    other = await gateway.client.get(
        WORKLIST, params={"accessionNumber": "ACC7001"}, headers=theirs
    )
    assert ours.json()["data"][0]["id"] != other.json()["data"][0]["id"]


async def test_addon_and_scope(gw: Gateway) -> None:
    await workflow_tenant(gw, "no-imaging", addons=("hl7_fhir",))
    refused = await gw.client.get(WORKLIST, headers=gw.auth("no-imaging"))
    assert (refused.status_code, refused.json()["code"]) == (403, "ADDON_REQUIRED")
    await workflow_tenant(gw, "imaging")
    no_scope = await gw.client.get(WORKLIST, headers=gw.auth("imaging", scopes="imaging:write"))
    assert (no_scope.status_code, no_scope.json()["code"]) == (403, "FORBIDDEN")
    anonymous = await gw.client.get(WORKLIST)
    assert anonymous.status_code == 401
