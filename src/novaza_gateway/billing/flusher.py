"""The usage flush loop: every second, at start-up (spool replay) and at shutdown.

Where usage waits when the database does not take it (ADR 0064): with Redis, in the shared
Redis list that any replica drains (``relay.py``); without, or with Redis down too, in this
process's memory and, at shutdown, in a spool file. Spool files are adopted at start-up and
every ``adopt_every`` flushes by whichever replica sees them, so a spool directory on a
volume the replicas share (or one that outlives the pod) loses nothing when a pod goes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from novaza_gateway.billing.metering import UsageMeter
from novaza_gateway.billing.relay import UsageRelay
from novaza_gateway.core.db import Database

log = logging.getLogger("novaza.billing.metering")


class UsageFlusher:
    """Flushes the meter every ``interval`` seconds, replays the spool at start-up, drains on
    shutdown (to the database, or to the spool when the database is gone). With a relay
    (Redis configured) batches go to Redis and are drained from there; if Redis fails, they
    go to the database directly."""

    def __init__(
        self,
        meter: UsageMeter,
        db: Database,
        spool_dir: Path,
        interval: float,
        relay: UsageRelay | None = None,
        after_flush: Callable[[], Awaitable[object]] | None = None,
        adopt_every: int = 60,
    ):
        self.meter = meter
        self.db = db
        self.spool_dir = spool_dir
        self.interval = interval
        self.relay = relay
        self.after_flush = after_flush  # prepaid AI settlement
        self.adopt_every = adopt_every
        self._replayed: list[Path] = []
        self._passes = 0

    async def flush_once(self) -> int:
        self._passes += 1
        if self._passes % self.adopt_every == 0:
            self.adopt()
        written = await self._through_relay() if self.relay else 0
        written += await self.meter.flush(self.db)  # what the relay did not take
        if self._replayed and not self.meter.pending:
            for path in self._replayed:
                path.unlink(missing_ok=True)
            self._replayed = []
        if self.after_flush is not None:
            await self.after_flush()
        return written

    async def _through_relay(self) -> int:
        assert self.relay is not None
        try:
            await self.relay.push(self.meter)
        except Exception as exc:  # Redis down: the database path takes the batches
            log.warning("usage relay unavailable", extra={"error": type(exc).__name__})
            return 0
        return await self.relay.drain(self.db)

    def adopt(self) -> int:
        """Take spool files that appeared since (another replica's, on a shared volume)
        into the meter; they are deleted once flushed. Answers how many."""
        try:
            found = self.meter.load_spool(self.spool_dir, skip=self._replayed)
        except (OSError, ValueError) as exc:  # unreadable: left for an operator, retried
            log.warning("usage spool not adopted", extra={"error": type(exc).__name__})
            return 0
        self._replayed += found
        return len(found)

    async def replay(self) -> None:
        if self.adopt():
            try:
                await self.flush_once()
            except Exception as exc:  # the loop retries; the files stay until it succeeds
                log.warning("usage spool replay failed", extra={"error": type(exc).__name__})

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush_once()
            except Exception as exc:
                log.warning(
                    "usage flush failed; retrying",
                    extra={"error": type(exc).__name__, "backlog": self.meter.backlog},
                )

    async def drain(self) -> None:
        try:
            await self.flush_once()
        except Exception as exc:
            path = self.meter.spool(self.spool_dir)
            if path is None:  # nothing left here (with Redis, it waits there for a replica)
                log.warning(
                    "usage flush failed at shutdown; nothing to spool",
                    extra={"error": type(exc).__name__},
                )
                return
            log.error(
                "usage flush failed at shutdown; spooled",
                extra={"error": type(exc).__name__, "spool": str(path)},
            )
