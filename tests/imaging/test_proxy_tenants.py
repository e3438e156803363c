"""Proxy mode and tenants: an upstream archive serves one tenant only, and tenants' images
stay apart whether they live upstream (each its own Orthanc) or in the embedded archive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import func, select, update

from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.imaging.models import ImagingStudy
from novaza_gateway.tenants.models import Tenant
from tests.conftest import Gateway, free_port
from tests.imaging.conftest import imaging_tenant
from tests.imaging.dicom import multipart, shipped, shipped_bytes
from tests.imaging.orthanc import run_orthanc


def proxy(url: str) -> dict[str, Any]:
    return {"imaging": {"mode": "proxy", "upstreamUrl": url}}


async def test_two_tenants_cannot_name_the_same_upstream(gateway: Gateway) -> None:
    port = free_port()
    await imaging_tenant(gateway, "first", settings=proxy(f"http://127.0.0.1:{port}/dicom-web"))
    admin = gateway.admin()
    base = {"name": "Second", "status": "active", "addons": ["medical_imaging"]}
    for same in (
        f"http://127.0.0.1:{port}/dicom-web",
        f"http://localhost:{port}/dicom-web/",  # the same server by another name
        f"http://127.0.0.1:{port}/",  # the whole server, which holds the first's root
    ):
        refused = await gateway.client.post(
            "/admin/tenants/",
            json={**base, "slug": "second", "settings": proxy(same)},
            headers=admin,
        )
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["code"] == "CONFLICT"
        assert body["details"] == {"path": "settings.imaging.upstreamUrl", "tenant": "first"}
        assert "first" in body["message"]

    await imaging_tenant(gateway, "second")  # embedded: no clash
    moved = await gateway.client.put(
        "/admin/tenants/second", json={"settings": proxy(f"http://127.0.0.1:{port}/dicom-web")},
        headers=admin,
    )  # fmt: skip
    assert moved.status_code == 409 and moved.json()["details"]["tenant"] == "first"
    elsewhere = f"http://127.0.0.1:{free_port()}/dicom-web"
    ok = await gateway.client.put(
        "/admin/tenants/second", json={"settings": proxy(elsewhere)}, headers=admin
    )
    assert ok.status_code == 200, ok.text
    # Once the first tenant leaves proxy mode, its old upstream is free for another.
    left = await gateway.client.put(
        "/admin/tenants/first", json={"settings": {"imaging": {"mode": "embedded"}}}, headers=admin
    )
    assert left.status_code == 200
    taken = await gateway.client.put(
        "/admin/tenants/second",
        json={"settings": proxy(f"http://localhost:{port}/dicom-web")},
        headers=admin,
    )
    assert taken.status_code == 200, taken.text


async def test_proxy_mode_needs_an_upstream(gw: Gateway) -> None:
    answer = await gw.client.post(
        "/admin/tenants/",
        json={"slug": "half", "name": "Half", "settings": {"imaging": {"mode": "proxy"}}},
        headers=gw.admin(),
    )
    assert answer.status_code == 422 and "upstreamUrl" in answer.text


async def test_a_shared_upstream_that_slipped_in_is_refused_on_every_request(
    gw: Gateway, tmp_path: Path
) -> None:
    """Settings stored before the rule, or two racing saves: both tenants are refused."""
    with run_orthanc(tmp_path / "orthanc") as orthanc:
        first = await imaging_tenant(gw, "first", settings={"imaging": orthanc.settings()})
        second = await imaging_tenant(gw, "second")
        async with gw.app.state.db.session_scope() as session:
            await session.execute(
                update(Tenant)
                .where(Tenant.slug == "second")
                .values(settings={"imaging": orthanc.settings()})
            )
        for auth in (first, second):
            answer = await gw.client.get("/med/qido/studies", headers=auth)
            assert answer.status_code == 409, answer.text
            assert answer.json()["code"] == "IMAGING_UPSTREAM_SHARED"
            assert "first" not in answer.text and "second" not in answer.text
            assert orthanc.url not in answer.text
        async with gw.app.state.db.session_scope() as session:
            outcomes = (
                await session.execute(
                    select(AuditEvent.outcome).where(AuditEvent.action == "imaging.search_studies")
                )
            ).scalars()
            assert list(outcomes) == ["imaging_upstream_shared"] * 2


async def test_tenants_images_stay_apart_across_modes(gw: Gateway, tmp_path: Path) -> None:
    ct = pydicom.dcmread(shipped("CT_small.dcm"))
    mr = pydicom.dcmread(shipped("MR_small.dcm"))
    with (
        run_orthanc(tmp_path / "a", "a") as orthanc_a,
        run_orthanc(tmp_path / "b", "b") as orthanc_b,
    ):
        a = await imaging_tenant(gw, "site-a", settings={"imaging": orthanc_a.settings()})
        b = await imaging_tenant(gw, "site-b", settings={"imaging": orthanc_b.settings()})
        c = await imaging_tenant(gw, "site-c")  # embedded archive
        for auth, name in ((a, "CT_small.dcm"), (b, "MR_small.dcm"), (c, "CT_small.dcm")):
            body, ctype = multipart([shipped_bytes(name)])
            stored = await gw.client.post(
                "/med/stow/studies", content=body, headers={**auth, "Content-Type": ctype}
            )
            assert stored.status_code == 200, stored.text

        def studies(answer: Any) -> list[str]:
            assert answer.status_code == 200, answer.text
            return [s["0020000D"]["Value"][0] for s in answer.json()]

        assert studies(await gw.client.get("/med/qido/studies", headers=a)) == [ct.StudyInstanceUID]
        assert studies(await gw.client.get("/med/qido/studies", headers=b)) == [mr.StudyInstanceUID]
        assert studies(await gw.client.get("/med/qido/studies", headers=c)) == [ct.StudyInstanceUID]
        # Each upstream holds its own tenant's study only; the embedded store went nowhere.
        for orthanc, expected in ((orthanc_a, ct), (orthanc_b, mr)):
            direct = orthanc.client().get("/studies")
            assert [s["0020000D"]["Value"][0] for s in direct.json()] == [expected.StudyInstanceUID]

        for auth, other in ((a, mr), (b, ct)):
            for path in (
                f"/med/wado/studies/{other.StudyInstanceUID}",
                f"/med/wado/studies/{other.StudyInstanceUID}/metadata",
            ):
                assert (await gw.client.get(path, headers=auth)).status_code == 404
            search = await gw.client.get(
                f"/med/qido/studies?StudyInstanceUID={other.StudyInstanceUID}", headers=auth
            )
            assert studies(search) == []
        # The embedded tenant reads its own copy; the proxied tenants left no index rows.
        assert (
            await gw.client.get(f"/med/wado/studies/{ct.StudyInstanceUID}/metadata", headers=c)
        ).status_code == 200
        async with gw.app.state.db.session_scope() as session:
            rows = await session.execute(
                select(ImagingStudy.tenant_id, func.count()).group_by(ImagingStudy.tenant_id)
            )
            assert dict(rows.all()) == {gw.tenants["site-c"]["id"]: 1}
