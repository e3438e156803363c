"""What areas run beside the request path: start-up steps, background loops, shutdown steps.

Areas register here from their wiring in ``app.py`` (an MLLP listener, an outbox worker, a
usage flusher). Start-up runs in registration order, shutdown in reverse, and background
loops are cancelled before the shutdown steps run (so a final flush sees no new work).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("novaza.lifecycle")

Step = Callable[[], Awaitable[None]]


_frozen: list[bool] = []


def freeze_startup_objects() -> None:
    """Take what is alive once the gateway has started (modules, mappers, schemas, settings:
    ~200k objects) out of the cyclic garbage collector, once per process. Otherwise every full
    collection walks them all: 80-150 ms measured, every ~10 s under load, a stall of every
    request in flight that alone decided HL7 ACK and QIDO p99 (ADR 0014). Once per process:
    what a later app (tests build hundreds) allocates stays collectable."""
    if not _frozen:
        _frozen.append(True)
        gc.collect()
        gc.freeze()


class Lifecycle:
    def __init__(self) -> None:
        self._startup: list[Step] = []
        self._shutdown: list[Step] = []
        self._loops: list[tuple[str, Step]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def on_startup(self, step: Step) -> None:
        self._startup.append(step)

    def on_shutdown(self, step: Step) -> None:
        self._shutdown.append(step)

    def run_in_background(self, name: str, loop: Step) -> None:
        self._loops.append((name, loop))

    async def start(self) -> None:
        for step in self._startup:
            await step()
        for name, loop in self._loops:
            self._tasks.append(asyncio.create_task(self._guarded(name, loop), name=name))
        freeze_startup_objects()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for step in reversed(self._shutdown):
            try:
                await step()
            except Exception:
                log.exception("shutdown step failed")

    @staticmethod
    async def _guarded(name: str, loop: Step) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop died", extra={"loop": name})
