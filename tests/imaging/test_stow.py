"""STOW-RS into the embedded archive, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pydicom
from sqlalchemy import func, select

from novaza_gateway.config import Settings
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.imaging.area import ImagingArea
from novaza_gateway.imaging.models import ImagingInstance, ImagingSeries, ImagingStudy
from tests.conftest import Gateway
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, shipped, shipped_bytes, uid

REFERENCED = "00081199"
FAILED = "00081198"
SOP_UID = "00081155"
REASON = "00081197"


async def count(gw: Gateway, model: type) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_store_shipped_files_and_index_them(gateway: Gateway) -> None:
    auth = await imaging_tenant(gateway, "stow-a")
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
    body, ctype = multipart([shipped_bytes(n) for n in names])
    response = await gateway.client.post(
        STOW, content=body, headers={**auth, "Content-Type": ctype}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    result = pydicom.Dataset.from_json(response.json())
    stored = {item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence}
    expected = {pydicom.dcmread(Path(p)).SOPInstanceUID for p in map(_path, names)}
    assert stored == expected
    assert "FailedSOPSequence" not in result
    for item in result.ReferencedSOPSequence:
        assert item.RetrieveURL.endswith(f"/instances/{item.ReferencedSOPInstanceUID}")
    assert await count(gateway, ImagingInstance) == 3
    assert await count(gateway, ImagingStudy) == 3  # three unrelated studies
    # Files are on disk under the data dir, byte-identical.
    files = sorted((gateway.data_dir / "imaging").rglob("*.dcm"))
    assert len(files) == 3
    assert {f.read_bytes() for f in files} == {shipped_bytes(n) for n in names}
    assert not list((gateway.data_dir / "imaging" / ".staging").rglob("*.part"))
    async with gateway.app.state.db.sessionmaker() as session:
        actions = (await session.execute(select(AuditEvent.action))).scalars().all()
    assert actions.count("imaging.store") == 3


def _path(name: str) -> str:
    return str(shipped(name))


async def test_restore_is_idempotent_and_conflicting_bytes_fail(gateway: Gateway) -> None:
    auth = await imaging_tenant(gateway, "stow-b")
    study, series, sop = uid(), uid(), uid()
    first = make_instance(study=study, series=series, sop=sop)
    body, ctype = multipart([first])
    for _ in range(2):
        response = await gateway.client.post(
            STOW, content=body, headers={**auth, "Content-Type": ctype}
        )
        assert response.status_code == 200, response.text
    assert await count(gateway, ImagingInstance) == 1
    async with gateway.app.state.db.sessionmaker() as session:
        row = (await session.execute(select(ImagingStudy))).scalar_one()
        assert (row.num_instances, row.num_series) == (1, 1)
    other = make_instance(study=study, series=series, sop=sop, patient_name="Other^Name")
    body, ctype = multipart([other])
    response = await gateway.client.post(
        STOW, content=body, headers={**auth, "Content-Type": ctype}
    )
    assert response.status_code == 409
    failed = response.json()[FAILED]["Value"][0]
    assert failed[SOP_UID]["Value"] == [sop]
    assert failed[REASON]["Value"] == [0x0111]
    assert await count(gateway, ImagingInstance) == 1


async def test_bad_parts_fail_alone_and_nothing_half_indexed(gateway: Gateway) -> None:
    auth = await imaging_tenant(gateway, "stow-c")
    study = uid()
    good = [make_instance(study=study, instance_number=i) for i in (1, 2)]
    no_meta = shipped_bytes("no_meta.dcm")  # a data set without the PS3.10 header
    parts = [good[0], b"not dicom at all", no_meta, good[1], make_instance(study=uid())]
    body, ctype = multipart(parts)
    response = await gateway.client.post(
        f"{STOW}/{study}", content=body, headers={**auth, "Content-Type": ctype}
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["00081190"]["Value"][0].endswith(f"/med/wado/studies/{study}")
    assert len(result[REFERENCED]["Value"]) == 2
    reasons = sorted(item[REASON]["Value"][0] for item in result[FAILED]["Value"])
    assert reasons == [0xA900, 0xC000, 0xC000]  # wrong study, garbage, no file meta
    async with gateway.app.state.db.sessionmaker() as session:
        studies = (await session.execute(select(ImagingStudy))).scalars().all()
        assert [(s.study_uid, s.num_instances) for s in studies] == [(study, 2)]
        assert len((await session.execute(select(ImagingSeries))).scalars().all()) == 2


async def test_stow_rejects_wrong_media_and_malformed_bodies(gw: Gateway) -> None:
    auth = await imaging_tenant(gw, "stow-d")
    response = await gw.client.post(
        STOW, content=b"{}", headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 415
    assert response.json()["code"] == "DICOM_MULTIPART_REQUIRED"
    body, ctype = multipart([make_instance(study=uid())])
    truncated = body[: len(body) // 2]
    response = await gw.client.post(
        STOW, content=truncated, headers={**auth, "Content-Type": ctype}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "DICOM_MULTIPART_MALFORMED"
    assert await count(gw, ImagingInstance) == 0


async def test_stow_needs_write_scope_and_addon(gw: Gateway) -> None:
    await gw.create_tenant("no-imaging", addons=["emr"])
    await imaging_tenant(gw, "reader")
    body, ctype = multipart([make_instance(study=uid())])
    no_addon = await gw.client.post(
        STOW, content=body, headers={**gw.auth("no-imaging"), "Content-Type": ctype}
    )
    assert no_addon.status_code == 403
    assert no_addon.json()["code"] == "ADDON_REQUIRED"
    read_only = await gw.client.post(
        STOW,
        content=body,
        headers={**gw.auth("reader", scopes="imaging:read"), "Content-Type": ctype},
    )
    assert read_only.status_code == 403
    assert read_only.json()["code"] == "FORBIDDEN"


async def test_concurrent_stores_into_one_new_study_all_land(gateway: Gateway) -> None:
    """Racing requests create the same study and series; the loser retries its savepoint."""
    auth = await imaging_tenant(gateway, "stow-race")
    study, series = uid(), uid()
    bodies = [
        multipart([make_instance(study=study, series=series, instance_number=i)]) for i in range(6)
    ]
    # One instance is sent twice at once: idempotent even when racing itself.
    bodies.append(bodies[0])
    responses = await asyncio.gather(
        *(
            gateway.client.post(STOW, content=body, headers={**auth, "Content-Type": ctype})
            for body, ctype in bodies
        )
    )
    assert [r.status_code for r in responses] == [200] * 7, [r.text for r in responses]
    async with gateway.app.state.db.sessionmaker() as session:
        row = (await session.execute(select(ImagingStudy))).scalar_one()
        assert (row.num_series, row.num_instances) == (1, 6)
        assert len((await session.execute(select(ImagingInstance))).scalars().all()) == 6


def test_staging_leftovers_are_swept_at_start(tmp_path: Path) -> None:
    staging = tmp_path / "imaging" / ".staging"
    staging.mkdir(parents=True)
    old, fresh = staging / "old.part", staging / "fresh.part"
    old.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload in flight")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    ImagingArea(Settings(data_dir=tmp_path).imaging, tmp_path)
    assert sorted(p.name for p in staging.glob("*.part")) == ["fresh.part"]
