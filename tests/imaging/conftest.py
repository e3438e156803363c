from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from novaza_gateway.app import create_app
from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import TENANT_SCOPES
from tests.conftest import Gateway, free_port, gateway_settings
from tests.imaging.dicom import streamed_stow, uid

STOW = "/med/stow/studies"


async def imaging_tenant(gw: Gateway, slug: str, **fields: object) -> dict[str, str]:
    """An active tenant with the imaging add-on; answers its Authorization header."""
    fields.setdefault("rateLimit", {"ratePerSecond": 1000, "burst": 1000})
    await gw.create_tenant(slug, addons=["medical_imaging", "emr"], **fields)
    return gw.auth(slug)


@pytest.fixture
def server(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path / "data"
    port = free_port()
    # dicomweb-client sends 'Host' without the port: links follow NOVAZA_PUBLIC_URL instead.
    public = f"http://127.0.0.1:{port}"
    app = create_app(gateway_settings(data_dir, sqlite_url, port=port, public_url=public))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", data_dir
    finally:
        uv.should_exit = True
        thread.join(timeout=20)


def tenant(url: str, data_dir: Path, slug: str) -> str:
    admin = devkeys.mint_token(data_dir, subject="admin", scopes=["platform:admin"], tenant=None)
    response = httpx.post(
        f"{url}/admin/tenants/",
        json={
            "slug": slug,
            "name": slug,
            "status": "active",
            "addons": ["medical_imaging"],
            "rateLimit": {"ratePerSecond": 1000, "burst": 1000},
        },
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 201, response.text
    return devkeys.mint_token(data_dir, subject="viewer", scopes=list(TENANT_SCOPES), tenant=slug)


def stow_then_wado_peaks(
    url: str, auth: dict[str, str], instances: int, boundary: str
) -> tuple[int, int, int]:
    """Store a streamed study of ``instances`` 2 MiB instances, then stream it back, under
    tracemalloc: (STOW peak bytes, WADO peak bytes, bytes received)."""
    study, series = uid(), uid()
    body, ctype = streamed_stow(study, series, instances, boundary)
    tracemalloc.start()
    try:
        stored = httpx.post(
            f"{url}/med/stow/studies",
            content=body,
            headers={**auth, "Content-Type": ctype},
            timeout=120,
        )
        _, stow_peak = tracemalloc.get_traced_memory()
        assert stored.status_code == 200, stored.text[:500]
        assert len(stored.json()["00081199"]["Value"]) == instances
        tracemalloc.reset_peak()
        received = 0
        with httpx.stream(
            "GET", f"{url}/med/wado/studies/{study}", headers=auth, timeout=120
        ) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_raw():
                received += len(chunk)
        _, wado_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return stow_peak, wado_peak, received
