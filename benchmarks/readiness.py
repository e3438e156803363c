"""Waiting for a server the benchmarks started: its ``/health`` answers 200."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``GET {base_url}/health`` is 200; RuntimeError when the process exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base_url} did not start within {timeout:.0f} s")
        time.sleep(0.1)
