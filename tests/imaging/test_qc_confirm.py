"""POST /med/imaging/qc-confirm: QC recorded once, the worklist item moves, the summary shows."""

from __future__ import annotations

import asyncio
from datetime import datetime

from tests.conftest import Gateway
from tests.imaging.dicom import make_instance, uid
from tests.imaging.workflow import audit_events, hl7, schedule, store, workflow_tenant

QC = "/med/imaging/qc-confirm"


async def item(gw: Gateway, auth: dict[str, str], accession: str) -> dict[str, object]:
    response = await gw.client.get(
        "/med/imaging/worklist",
        params={"accessionNumber": accession, "status": "scheduled,in_progress,completed"},
        headers=auth,
    )
    (found,) = response.json()["data"]
    assert isinstance(found, dict)
    return found


async def test_passed_completes_the_item_and_repeats_are_idempotent(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    study = uid()
    await store(gateway, auth, make_instance(study=study, patient_id="100234", accession="ACC7001"))
    before = await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)
    link = before.json()["worklistItem"]
    assert (link["accessionNumber"], link["status"]) == ("ACC7001", "in_progress")  # received
    assert link["href"].startswith("/med/imaging/worklist?accessionNumber=ACC7001")
    assert (before.json()["qcStatus"], before.json()["qc"]) == ("pending", None)
    followed = await gateway.client.get(link["href"], headers=auth)
    assert [i["id"] for i in followed.json()["data"]] == [link["id"]]

    tech = gateway.auth("stmarys") | {"X-Request-Id": "qc-1"}
    body = {"studyInstanceUID": study, "result": "passed", "notes": "motion-free"}
    first = await gateway.client.post(QC, json=body, headers=tech)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["qcStatus"] == "passed"
    assert answer["qc"]["result"] == "passed"
    assert answer["qc"]["confirmedBy"] == "user-1"
    assert answer["qc"]["notes"] == "motion-free"
    confirmed_at = datetime.fromisoformat(answer["qc"]["confirmedAt"])
    assert answer["worklistItem"]["status"] == "completed"
    assert (await item(gateway, auth, "ACC7001"))["status"] == "completed"

    again = await gateway.client.post(QC, json=body | {"notes": "again"}, headers=auth)
    assert again.status_code == 200
    assert again.json()["qc"] == answer["qc"]  # the first confirmation stands

    summary = (await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert summary["qcStatus"] == "passed"
    assert summary["qc"] == answer["qc"]
    assert summary["worklistItem"]["status"] == "completed"

    events = await audit_events(gateway, "imaging.qc_confirm")
    assert [(e.after or {}).get("repeat") for e in events] == [False, True]
    assert (events[0].actor, events[0].caller_request_id, events[0].resource_id) == (
        "user-1",
        "qc-1",
        study,
    )
    assert events[0].patient_id == "100234"
    assert events[0].at >= confirmed_at.replace(microsecond=0)
    completed = await audit_events(gateway, "order.completed")
    assert [e.resource_id for e in completed] == ["ACC7001"]


async def test_conflicting_result_is_409_and_unknown_study_404(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    study = uid()
    await store(gateway, auth, make_instance(study=study, accession="NO-ORDER"))
    failed = await gateway.client.post(
        QC, json={"studyInstanceUID": study, "result": "failed"}, headers=auth
    )
    assert failed.status_code == 200, failed.text
    assert failed.json()["worklistItem"] is None  # no order: QC is recorded all the same
    conflict = await gateway.client.post(
        QC, json={"studyInstanceUID": study, "result": "passed"}, headers=auth
    )
    assert (conflict.status_code, conflict.json()["code"]) == (409, "QC_CONFLICT")
    assert conflict.json()["details"]["qcStatus"] == "failed"
    missing = await gateway.client.post(
        QC, json={"studyInstanceUID": uid(), "result": "passed"}, headers=auth
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "STUDY_NOT_FOUND")
    invalid = await gateway.client.post(
        QC, json={"studyInstanceUID": study, "result": "maybe"}, headers=auth
    )
    assert (invalid.status_code, invalid.json()["code"]) == (422, "VALIDATION_FAILED")
    summary = (await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert summary["qcStatus"] == "failed"


async def test_racing_confirmations_record_one_result(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    study = uid()
    await store(gateway, auth, make_instance(study=study))
    answers = await asyncio.gather(
        *(
            gateway.client.post(QC, json={"studyInstanceUID": study, "result": r}, headers=auth)
            for r in ("passed", "failed", "passed", "failed")
        )
    )
    statuses = sorted(a.status_code for a in answers)
    winner = next(a.json()["qcStatus"] for a in answers if a.status_code == 200)
    assert statuses == [200, 200, 409, 409], [a.text for a in answers]
    assert all(a.json()["code"] == "QC_CONFLICT" for a in answers if a.status_code == 409)
    summary = (await gateway.client.get(f"/med/imaging/study/{study}", headers=auth)).json()
    assert summary["qcStatus"] == winner


async def test_matched_by_study_uid_and_failed_keeps_the_item_open(gateway: Gateway) -> None:
    auth = await workflow_tenant(gateway)
    await schedule(gateway, auth)
    mg_uid = "1.2.840.113619.2.55.3.9001"  # the study UID the worklist handed out (IPC-3)
    await store(gateway, auth, make_instance(study=mg_uid, patient_id="100234", accession=""))
    summary = (await gateway.client.get(f"/med/imaging/study/{mg_uid}", headers=auth)).json()
    assert summary["worklistItem"]["accessionNumber"] == "ACC9001"
    failed = await gateway.client.post(
        QC, json={"studyInstanceUID": mg_uid, "result": "failed"}, headers=auth
    )
    assert failed.json()["worklistItem"]["status"] == "in_progress"  # to be acquired again
    assert (await item(gateway, auth, "ACC9001"))["status"] == "in_progress"
    # the repeat acquisition is a new study under the same accession: its QC completes the item
    repeat = uid()
    await store(
        gateway, auth, make_instance(study=repeat, patient_id="100234", accession="ACC9001")
    )
    passed = await gateway.client.post(
        QC, json={"studyInstanceUID": repeat, "result": "passed"}, headers=auth
    )
    assert passed.json()["worklistItem"]["status"] == "completed"


async def test_a_canceled_item_stays_canceled(gw: Gateway) -> None:
    auth = await workflow_tenant(gw)
    await hl7(gw, auth, "adt", "adt_a04_v23_meditech.hl7")
    await hl7(gw, auth, "orm", "orm_o01_nw_v23_meditech.hl7", "orm_o01_ca_v23.hl7")
    study = uid()
    await store(gw, auth, make_instance(study=study, accession="RVACC3301"))
    passed = await gw.client.post(
        QC, json={"studyInstanceUID": study, "result": "passed"}, headers=auth
    )
    assert passed.status_code == 200
    assert passed.json()["worklistItem"]["status"] == "canceled"


async def test_another_tenants_study_is_404_and_untouched(gateway: Gateway) -> None:
    owner = await workflow_tenant(gateway, "owner")
    other = await workflow_tenant(gateway, "other")
    await schedule(gateway, owner)
    study = uid()
    await store(
        gateway, owner, make_instance(study=study, patient_id="100234", accession="ACC7001")
    )
    await schedule(gateway, other)  # the same accession numbers exist in the other tenant
    crossed = await gateway.client.post(
        QC, json={"studyInstanceUID": study, "result": "passed"}, headers=other
    )
    assert (crossed.status_code, crossed.json()["code"]) == (404, "STUDY_NOT_FOUND")
    mine = (await gateway.client.get(f"/med/imaging/study/{study}", headers=owner)).json()
    assert mine["qcStatus"] == "pending"
    assert (await item(gateway, owner, "ACC7001"))["status"] == "in_progress"  # received
    assert (await item(gateway, other, "ACC7001"))["status"] == "scheduled"
    # the owner's confirmation completes the owner's item only
    await gateway.client.post(
        QC, json={"studyInstanceUID": study, "result": "passed"}, headers=owner
    )
    assert (await item(gateway, owner, "ACC7001"))["status"] == "completed"
    assert (await item(gateway, other, "ACC7001"))["status"] == "scheduled"
    refused = [
        e for e in await audit_events(gateway, "imaging.qc_confirm") if e.outcome != "success"
    ]
    assert [(e.tenant_id, e.outcome) for e in refused] == [
        (gateway.tenants["other"]["id"], "study_not_found")
    ]


async def test_needs_imaging_write(gw: Gateway) -> None:
    await workflow_tenant(gw)
    reader = gw.auth("stmarys", scopes="imaging:read")
    refused = await gw.client.post(
        QC, json={"studyInstanceUID": uid(), "result": "passed"}, headers=reader
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")
