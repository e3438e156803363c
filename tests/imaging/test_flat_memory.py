"""STOW parses and WADO serves a 100 MB study without holding it in memory.

The gateway runs in a uvicorn thread of this process; tracemalloc sees the server and the
client, and the client streams both ways, so the peak is the gateway's working set.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import httpx

from tests.imaging.conftest import tenant
from tests.imaging.dicom import streamed_stow, uid

INSTANCES = 50  # x 2 MiB
LIMIT = 16 * 1024 * 1024  # far under the 100 MB that passes through


def test_store_and_retrieve_100_mb_with_flat_memory(server: tuple[str, Path]) -> None:
    url, data_dir = server
    auth = {"Authorization": f"Bearer {tenant(url, data_dir, 'big-study')}"}
    study, series = uid(), uid()
    # Each part is made as it is sent (a template with a same-length SOP UID swapped in), so
    # the client side holds one part at a time.
    body, ctype = streamed_stow(study, series, INSTANCES, "flat-memory-boundary")
    tracemalloc.start()
    try:
        response = httpx.post(
            f"{url}/med/stow/studies",
            content=body,
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
