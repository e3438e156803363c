"""STOW parses and WADO serves a 100 MB study without holding it in memory.

The gateway runs in a uvicorn thread of this process; tracemalloc sees the server and the
client, and the client streams both ways, so the peak is the gateway's working set.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.imaging.conftest import tenant
from tests.imaging.dicom import make_instance, uid

INSTANCES = 50  # x 2 MiB
LIMIT = 16 * 1024 * 1024  # far under the 100 MB that passes through


def test_store_and_retrieve_100_mb_with_flat_memory(server: tuple[str, Path]) -> None:
    url, data_dir = server
    auth = {"Authorization": f"Bearer {tenant(url, data_dir, 'big-study')}"}
    study, series = uid(), uid()
    boundary = "flat-memory-boundary"

    # One 2 MiB instance made before tracing; each part swaps in a same-length SOP UID, so
    # the client side holds one part at a time.
    template_sop = "1.2.826.0.1.3680043.9.7.1.10000000000000000000"
    template = make_instance(study=study, series=series, sop=template_sop, rows=1024, columns=1024)

    def body() -> Iterator[bytes]:
        for i in range(INSTANCES):
            sop = f"{template_sop[:-20]}1{i + 1:019d}"
            data = template.replace(template_sop.encode(), sop.encode())
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for start in range(0, len(data), 64 * 1024):
                yield data[start : start + 64 * 1024]
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    tracemalloc.start()
    try:
        response = httpx.post(
            f"{url}/med/stow/studies",
            content=body(),
            headers={**auth, "Content-Type": ctype},
            timeout=120,
        )
        _, stow_peak = tracemalloc.get_traced_memory()
        assert response.status_code == 200, response.text[:500]
        assert len(response.json()["00081199"]["Value"]) == INSTANCES
        tracemalloc.reset_peak()
        received = 0
        with httpx.stream("GET", f"{url}/med/wado/studies/{study}", headers=auth, timeout=120) as r:
            for chunk in r.iter_raw():
                received += len(chunk)
        _, wado_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received > INSTANCES * 2 * 1024 * 1024
    assert stow_peak < LIMIT, f"STOW peak {stow_peak / 1e6:.1f} MB"
    assert wado_peak < LIMIT, f"WADO peak {wado_peak / 1e6:.1f} MB"
    print(f"peaks: STOW {stow_peak / 1e6:.1f} MB, WADO {wado_peak / 1e6:.1f} MB")
