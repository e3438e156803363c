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
group's values (a data error: ``core.dberrors``), it is rolled back and run again with one,
where a message whose values the store refuses is answered AE alone. If the database still
refuses the group outside any message's SAVEPOINT, each message runs in a transaction of its
own: the one at fault is answered AR (not stored), the others commit (ADR 0018).

If the store is unavailable (a connection lost, a timeout), every message of the group not
yet committed gets ``StoreUnavailable`` (MLLP: its connection is closed without an ACK;
HTTP: 503): the sender resends, and a message that was stored after all is answered from
the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from novaza_gateway.core import dberrors
from novaza_gateway.core.db import Database
from novaza_gateway.core.metering import UsageRecorder
from novaza_gateway.hl7 import intake, metering
from novaza_gateway.hl7.errors import StoreUnavailable
from novaza_gateway.hl7.intake import Received
from novaza_gateway.hl7.metrics import INTAKE_ALONE, INTAKE_GROUP_MESSAGES, INTAKE_REDO
from novaza_gateway.hl7.outcome import Outcome, refused
from novaza_gateway.hl7.processing import needs_savepoint, order_steps

log = logging.getLogger("novaza.hl7")
# What a message of a group is answered: its outcome, or the error its sender gets.
Result = Outcome | Exception

MAX_GROUP = 64
LINGER_SECONDS = 0.001
BUSY_SECONDS = 0.05  # a message this soon after a group means the senders are busy
BIG_STEPS = 8  # an order message with more steps than this is a group of its own


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
                group = self._take_group()
                if group:
                    await self._commit(group)
                answered, since = len(group), loop.time()

    def _take_group(self) -> list[tuple[Received, asyncio.Future[Outcome]]]:
        """The next group, in queue order. A big order message (more than ``BIG_STEPS``
        steps) is a group of its own: it runs on the fast path itself (alone, it needs no
        SAVEPOINT), and so do the messages around it (ADR 0019)."""
        group: list[tuple[Received, asyncio.Future[Outcome]]] = []
        while self._queue and len(group) < self._max_group:
            received, future = self._queue[0]
            big = order_steps(received.message) > BIG_STEPS
            if big and group:
                break
            self._queue.popleft()
            if not future.done():  # cancelled: its connection is gone
                group.append((received, future))
            if big and group:
                break
        return group

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
            results = await self._store([received for received, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            failure = _answerable(exc)
            for _, future in group:
                if not future.done():
                    future.set_exception(failure)
            return
        for (received, future), result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                if not future.done():
                    future.set_exception(result)
                continue
            if self._usage is not None:  # committed: the stored message is billable
                metering.record_inbound(self._usage, received.ctx.tenant_id, (result,))
            if not future.done():
                future.set_result(result)

    async def _store(self, group: list[Received]) -> list[Result]:
        # a merge or a message of several order steps needs its SAVEPOINT: no try without
        isolate = any(needs_savepoint(received.message, len(group) == 1) for received in group)
        try:
            if not isolate:
                try:
                    async with self._transaction() as session:
                        return list(await intake.receive_group(session, group, isolate=False))
                except (intake.Redo, IntegrityError):
                    INTAKE_REDO.inc()
                except DBAPIError as exc:
                    _raise_if_unavailable(exc)  # else a value it refused: find whose
                    INTAKE_REDO.inc()
            try:
                async with self._transaction() as session:
                    return list(await intake.receive_group(session, group, isolate=True))
            except DBAPIError as exc:  # refused outside every message's SAVEPOINT
                _raise_if_unavailable(exc)
                if len(group) == 1:
                    return [_alone_failure(group[0], exc)]
            return await self._alone(group)
        except BaseException:
            await self._release()
            raise

    async def _alone(self, group: list[Received]) -> list[Result]:
        """Each message in a transaction of its own: the one whose values the store refuses
        even there is answered AR (nothing of it stored), one that fails for another
        database reason gets ``StoreUnavailable``; the others commit. The store lost midway:
        the messages not yet committed get ``StoreUnavailable``."""
        INTAKE_ALONE.inc()
        results: list[Result] = []
        for received in group:
            try:
                async with self._transaction() as session:
                    results += await intake.receive_group(session, [received], isolate=True)
            except DBAPIError as exc:
                if dberrors.unavailable(exc):
                    _log_store_failure(exc)
                    await self._release()
                    results += [StoreUnavailable() for _ in group[len(results) :]]
                    break
                results.append(_alone_failure(received, exc))
        return results

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


def _raise_if_unavailable(exc: DBAPIError) -> None:
    """The store is gone: the group fails. Else one message is at fault: find which."""
    if dberrors.unavailable(exc):
        raise exc


def _alone_failure(received: Received, exc: DBAPIError) -> Result:
    """A message that fails in a transaction of its own: AR when the store refused its
    values, else (an unexpected database error) the answer its sender resends on."""
    log.warning(
        "hl7 message failed alone",
        extra={"error": _error_class(exc), "tenant": received.ctx.tenant_id},
    )
    if dberrors.fault(exc) is dberrors.Fault.DATA:
        return refused(received.data, received.message.header)
    return StoreUnavailable()


def _answerable(exc: Exception) -> Exception:
    """What the senders of a failed group get: any database failure is ``StoreUnavailable``
    (HTTP 503, MLLP no ACK: they resend); other errors as they are."""
    if isinstance(exc, SQLAlchemyError | OSError):
        _log_store_failure(exc)
        return StoreUnavailable()
    return exc


def _log_store_failure(exc: Exception) -> None:
    log.error("hl7 intake store failed", extra={"error": _error_class(exc)})


def _error_class(exc: Exception) -> str:
    """The driver's error class (``CharacterNotInRepertoireError``), never its message: it
    may quote the message's values."""
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    cause = orig.__cause__ if isinstance(orig, BaseException) and orig.__cause__ else orig
    return type(cause if isinstance(cause, BaseException) else exc).__name__
