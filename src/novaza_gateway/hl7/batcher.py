"""Group commit for HL7 intake: many connections' and requests' messages, one transaction.

Every MLLP connection and every HTTP intake request (ADR 0016) hands its messages to the
area's one ``IntakeBatcher``. Its task takes whatever is
queued (up to ``max_group`` messages), stores and processes it in one transaction
(``intake.receive_group``), commits, and only then answers each message. While a group
commits, the next one gathers, so the busier the listener the larger the groups, and an
idle listener answers a lone message at once: no timer, no added latency.

Groups run one after another: messages keep their order (per connection and overall), and
no group reads what an earlier one has not committed. A group first runs without a
SAVEPOINT per message; when ``intake`` asks for it (``Redo``) or the database refuses the
group's writes, it is rolled back and run again with one. If the store fails, every
message of the group gets the error (MLLP: its connection is closed without an ACK; HTTP: 503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from novaza_gateway.core.db import Database
from novaza_gateway.core.metering import UsageRecorder
from novaza_gateway.hl7 import intake, metering
from novaza_gateway.hl7.intake import Received
from novaza_gateway.hl7.metrics import INTAKE_GROUP_MESSAGES, INTAKE_REDO
from novaza_gateway.hl7.outcome import Outcome
from novaza_gateway.hl7.processing import needs_savepoint

MAX_GROUP = 64
LINGER_SECONDS = 0.001
BUSY_SECONDS = 0.05  # a message this soon after a group means the senders are busy


class IntakeBatcher:
    def __init__(
        self, db: Database, max_group: int = MAX_GROUP, usage: UsageRecorder | None = None
    ) -> None:
        self._db = db
        self._usage = usage
        self._max_group = max_group
        self._queue: deque[tuple[Received, asyncio.Future[Outcome]]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: AsyncConnection | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hl7-intake")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue:
            self._queue.popleft()[1].cancel()
        await self._release()

    def submit(self, received: Received) -> asyncio.Future[Outcome]:
        """Queue a message; the future is answered once its group has committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("the intake batcher is not running")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((received, future))
        self._ready.set()
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        answered, since = 0, 0.0  # the last group's size and end: its senders send again soon
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), BUSY_SECONDS)
            except TimeoutError:  # idle: the connection goes back to the pool
                await self._release()
                await self._ready.wait()
            self._ready.clear()
            while self._queue:
                if answered > 1 and loop.time() - since < BUSY_SECONDS:
                    await self._gather(min(self._max_group, len(self._queue) + answered))
                group: list[tuple[Received, asyncio.Future[Outcome]]] = []
                while self._queue and len(group) < self._max_group:
                    received, future = self._queue.popleft()
                    if not future.done():  # cancelled: its connection is gone
                        group.append((received, future))
                if group:
                    await self._commit(group)
                answered, since = len(group), loop.time()

    async def _gather(self, expected: int) -> None:
        """Under load, wait a moment (at most ``LINGER_SECONDS``) for the senders the last
        group answered: one group of eight costs much less than two of four."""
        deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
        while len(self._queue) < expected:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)

    async def _commit(self, group: list[tuple[Received, asyncio.Future[Outcome]]]) -> None:
        INTAKE_GROUP_MESSAGES.observe(len(group))
        try:
            outcomes = await self._store([received for received, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        if self._usage is not None:  # committed: the stored messages are billable
            for (received, _), outcome in zip(group, outcomes, strict=True):
                metering.record_inbound(self._usage, received.ctx.tenant_id, (outcome,))
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _store(self, group: list[Received]) -> list[Outcome]:
        # a merge or a message of several order steps needs its SAVEPOINT: no try without
        isolate = any(needs_savepoint(received.message) for received in group)
        try:
            if not isolate:
                try:
                    async with self._transaction() as session:
                        return await intake.receive_group(session, group, isolate=False)
                except (intake.Redo, IntegrityError):
                    INTAKE_REDO.inc()
            async with self._transaction() as session:
                return await intake.receive_group(session, group, isolate=True)
        except BaseException:
            await self._release()
            raise

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """A session on the batcher's connection, committed when the block ends. The
        connection is kept while groups follow each other: no pool checkout and ping per
        group, and its prepared statements stay warm."""
        if self._connection is None:
            self._connection = await self._db.engine.connect()
        session = AsyncSession(bind=self._connection, expire_on_commit=False)
        try:
            yield session
            await session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await session.rollback()
            raise
        finally:
            await session.close()

    async def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
