"""What a worker process of ``novaza serve --workers N`` does as it starts (ADR 0067).

uvicorn's supervisor spawns the workers with ``multiprocessing`` and restarts those that die.
A supervisor killed outright (SIGKILL, OOM) cannot stop them: they would keep the port, and
the restarted gateway would fail with "address in use". Each worker therefore asks Linux to
send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), which drains it like any
SIGTERM. And a worker that replaces a dead one tells Prometheus the dead one is gone, so its
live gauges (pool connections in use) stop counting.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import re
import signal
from pathlib import Path

from prometheus_client import multiprocess

log = logging.getLogger("novaza.workers")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_SAMPLE_FILE = re.compile(r"_(\d+)\.db$")


def supervisor_pid() -> int | None:
    """The supervisor's pid when this process is one of its workers; None otherwise."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM this process when its parent dies (Linux; elsewhere a no-op)."""
    if os.uname().sysname != "Linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own symbols: libc's prctl
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed", extra={"errno": ctypes.get_errno()})
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def forget_dead_workers(metrics_dir: Path) -> list[int]:
    """``mark_process_dead`` for each process with samples here that no longer runs."""
    pids = {
        int(found.group(1))
        for path in metrics_dir.glob("*.db")
        if (found := _SAMPLE_FILE.search(path.name))
    }
    dead = sorted(pid for pid in pids if not _alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now has the pid
        return True
    return True
