"""The loop every durable outbox runs: a pass, then a wait when there was nothing to do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


async def run_passes(
    run_once: Callable[[], Awaitable[int]],
    wake: asyncio.Event,
    poll_seconds: float,
    log: logging.Logger,
) -> None:
    """Forever: ``run_once`` (answers how much it handled); after a pass that handled
    nothing, or failed (the store is away), wait for ``wake`` or ``poll_seconds``."""
    while True:
        try:
            busy = await run_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is away: wait and try again
            log.warning("outbox pass failed", extra={"error": type(exc).__name__})
            busy = 0
        if not busy:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll_seconds)
