"""STOW parses and WADO serves a 100 MB study without holding it in memory.

The gateway runs in a uvicorn thread of this process; tracemalloc sees the server and the
client, and the client streams both ways, so the peak is the gateway's working set.
"""

from __future__ import annotations

from pathlib import Path

from tests.imaging.conftest import stow_then_wado_peaks, tenant

INSTANCES = 50  # x 2 MiB
LIMIT = 16 * 1024 * 1024  # far under the 100 MB that passes through


def test_store_and_retrieve_100_mb_with_flat_memory(server: tuple[str, Path]) -> None:
    url, data_dir = server
    auth = {"Authorization": f"Bearer {tenant(url, data_dir, 'big-study')}"}
    # Each part is made as it is sent (a template with a same-length SOP UID swapped in), so
    # the client side holds one part at a time.
    stow_peak, wado_peak, received = stow_then_wado_peaks(
        url, auth, INSTANCES, "flat-memory-boundary"
    )
    assert received > INSTANCES * 2 * 1024 * 1024
    assert stow_peak < LIMIT, f"STOW peak {stow_peak / 1e6:.1f} MB"
    assert wado_peak < LIMIT, f"WADO peak {wado_peak / 1e6:.1f} MB"
    print(f"peaks: STOW {stow_peak / 1e6:.1f} MB, WADO {wado_peak / 1e6:.1f} MB")
