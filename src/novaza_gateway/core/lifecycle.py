"""What areas run beside the request path: start-up steps, background loops, drain and
shutdown steps.

Areas register here from their wiring in ``app.py`` (an MLLP listener, an outbox worker, a
usage flusher). Start-up runs in registration order, shutdown in reverse, and background
loops are cancelled before the shutdown steps run (so a final flush sees no new work).

Draining comes first, on SIGTERM, while requests are still served (ADR 0066): readiness
answers 503 and each drain step refuses the work that has not started (the AI queue) and
ends what runs by the deadline it is given, so that it ends with an answer rather than a cut
connection. The server closes its listener ``delay`` seconds later and gives in-flight
requests ``grace`` seconds; the lifespan's shutdown steps run after that.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

log = logging.getLogger("novaza.lifecycle")

Step = Callable[[], Awaitable[None]]
Drain = Callable[[float], None]
"""Told the process is shutting down, on the loop: refuse what has not started; what runs
must have ended within the seconds given."""

# Work told to end by the grace deadline would race the server's own cut: it is told to end
# this much earlier, so its last answer (an SSE error event) leaves before the cut.
FLUSH_SECONDS = 1.0


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
        self._drain: list[Drain] = []
        self.draining = False

    def on_startup(self, step: Step) -> None:
        self._startup.append(step)

    def on_shutdown(self, step: Step) -> None:
        self._shutdown.append(step)

    def run_in_background(self, name: str, loop: Step) -> None:
        self._loops.append((name, loop))

    def on_drain(self, step: Drain) -> None:
        self._drain.append(step)

    def drain(self, ends_in: float) -> None:
        """Begin the shutdown (once): every drain step, in registration order, on the loop."""
        if self.draining:
            return
        self.draining = True
        log.info("draining", extra={"endsInSeconds": round(ends_in, 3)})
        for step in self._drain:
            try:
                step(ends_in)
            except Exception:
                log.exception("drain step failed")

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


def drain_on_sigterm(lifecycle: Lifecycle, delay_seconds: float, grace_seconds: float) -> None:
    """Under ``novaza serve`` (uvicorn, main thread): SIGTERM drains the app at once and
    reaches the server, which closes its listener and waits ``grace_seconds`` for in-flight
    requests, ``delay_seconds`` later (load balancers stop routing here meanwhile). A second
    SIGTERM skips what is left of the delay.

    Installed at start-up, over the handler uvicorn put in place for the server's run (and
    restores after it): uvicorn's worker processes build their own ``Server``, so there is no
    subclass to hand them.
    """
    ends_in = delay_seconds + max(grace_seconds - FLUSH_SECONDS, grace_seconds / 2)

    async def install() -> None:
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):  # not under a server that drains on SIGTERM
            return
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            if len(received) > 1:
                server_handler(signum, frame)
                return
            # A signal handler runs between two bytecodes of the loop's thread: hand over.
            loop.call_soon_threadsafe(lifecycle.drain, ends_in)
            loop.call_soon_threadsafe(loop.call_later, delay_seconds, server_handler, signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    lifecycle.on_startup(install)
