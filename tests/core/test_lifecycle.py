"""Start-up, background loops and shutdown of what areas run beside the request path."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

from novaza_gateway.core import lifecycle
from novaza_gateway.core.lifecycle import Lifecycle


async def test_start_runs_steps_in_order_loops_after_and_stop_in_reverse() -> None:
    events: list[str] = []
    life = Lifecycle()

    def step(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            events.append(name)

        return run

    async def loop() -> None:
        events.append("loop")
        await asyncio.Event().wait()

    life.on_startup(step("start-1"))
    life.on_startup(step("start-2"))
    life.run_in_background("loop", loop)
    life.on_shutdown(step("stop-1"))
    life.on_shutdown(step("stop-2"))
    await life.start()
    await asyncio.sleep(0)
    await life.stop()
    assert events == ["start-1", "start-2", "loop", "stop-2", "stop-1"]


async def test_start_up_objects_leave_the_cyclic_gc_once_per_process() -> None:
    frozen_before = list(lifecycle._frozen)
    lifecycle._frozen.clear()
    gc.unfreeze()
    try:
        await Lifecycle().start()
        first = gc.get_freeze_count()
        assert first > 10_000  # modules, classes, mappers of everything imported so far
        junk = [[object()] for _ in range(1_000)]
        await Lifecycle().start()  # a second app in the same process freezes nothing new
        assert gc.get_freeze_count() == first
        del junk
    finally:
        lifecycle._frozen[:] = frozen_before or [True]
