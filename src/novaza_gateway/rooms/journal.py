"""Write-ahead intents: no Personeo room without its local room, and both sides agree.

Every call to a tenant's Personeo is announced first in ``rooms_reconcile``, in its own short
transaction, so the record is on disk before Personeo acts (ADR 0051). Each intent says what
to do should the local half never commit:

- create or reopen: ``undo_create``, archive the remote room. Personeo's id is added (again
  in its own transaction) as soon as it answers;
- archive: ``finish_archive``, archive the remote room (Personeo may have already) and then
  the local one.

The request's transaction deletes the intent as it writes the room, guarded on the intent
still being ``pending`` and unclaimed, so the commit that keeps the room is the one that
retires its intent. When the request rolls back instead, ``transaction`` acts at once: the
remote room is archived, best effort (a failure queues the intent, with backoff, for the
reconciler); an archive is queued to be finished. Whatever escapes both (a crash, the store
lost mid-way) is an intent left ``pending``, which the reconciler takes after the grace.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Executable, Table, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.db import Database, after_commit, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.rooms.errors import PersoneoUnavailable, RoomOperationTakenOver
from novaza_gateway.rooms.models import ReconcileItem
from novaza_gateway.rooms.personeo import PersoneoClient, Upstream

log = logging.getLogger("novaza.rooms.reconcile")
TABLE = cast(Table, ReconcileItem.__table__)
UNDO_CREATE, FINISH_ARCHIVE = "undo_create", "finish_archive"
PENDING, QUEUED, DONE, DEAD = "pending", "queued", "done", "dead"
INTENTS = "rooms.intents"  # session.info: the intents this transaction announced


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    poll_seconds: float = 5.0  # the reconciler's idle wait
    max_attempts: int = 12  # then dead
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 900.0
    grace_seconds: float = 60.0  # + 2 upstream timeouts: a pending intent's request is gone

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter: uniform in [base, min(max, base * 2^(n-1))]."""
        base = self.backoff_seconds
        ceiling = min(self.backoff_max_seconds, base * 2 ** max(0, attempt - 1))
        return random.uniform(base, max(base, ceiling))


@dataclass(slots=True)
class Intent:
    id: str
    tenant_id: str
    room_id: str
    action: str
    upstream: Upstream
    remote_id: str | None = None


class Journal:
    def __init__(
        self,
        db: Database,
        personeo: PersoneoClient,
        policy: ReconcilePolicy,
        upstream_timeout_seconds: float,
        nudge: Callable[[], None],
    ) -> None:
        self.db = db
        self.policy = policy
        self._personeo = personeo
        self._grace = timedelta(seconds=policy.grace_seconds + 2 * upstream_timeout_seconds)
        self._nudge = nudge

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The request's session (``Database.session_scope``); when it rolls back, the
        Personeo half of what it announced is undone (or handed to the reconciler)."""
        intents: list[Intent] = []
        try:
            async with self.db.session_scope() as session:
                session.info[INTENTS] = intents
                yield session
        except BaseException as exc:
            for intent in intents:
                try:
                    await self._undo(intent, type(exc).__name__)
                except Exception as undo_failed:  # the intent stays for the reconciler
                    log.warning(
                        "rooms undo failed",
                        extra={"error": type(undo_failed).__name__, "tenant": intent.tenant_id,
                               "room": intent.room_id},
                    )  # fmt: skip
            raise

    # ------------------------------------------------------------------ in the request

    async def create_remote(
        self, session: AsyncSession, tenant_id: str, room_id: str, upstream: Upstream, body: Any
    ) -> Intent:
        """Create the room at Personeo, announced first; the intent carries its id."""
        intent = Intent(new_id(), tenant_id, room_id, UNDO_CREATE, upstream)
        await self._open(session, intent)
        try:
            remote_id = await self._personeo.create_room(upstream, body)
        except PersoneoUnavailable as exc:
            _forget(session, intent)
            if exc.maybe_applied:  # Personeo may hold a room whose id we never learnt
                await self._best_effort(intent, DEAD, f"remote id unknown: {_reason(exc)}")
            else:
                await self._best_effort(intent, None, None)
            raise
        intent.remote_id = remote_id  # a failure to record it is undone on the way out
        await self._write(_where(intent).values(remote_id=remote_id, updated_at=utcnow()))
        return intent

    async def archive_remote(
        self,
        session: AsyncSession,
        tenant_id: str,
        room_id: str,
        upstream: Upstream,
        remote_id: str,
        requested_by: str,
    ) -> Intent:
        """Archive the room at Personeo, announced first."""
        intent = Intent(new_id(), tenant_id, room_id, FINISH_ARCHIVE, upstream, remote_id)
        await self._open(session, intent, requested_by)
        try:
            await self._personeo.archive_room(upstream, remote_id)
        except PersoneoUnavailable as exc:
            _forget(session, intent)
            if exc.maybe_applied:  # Personeo may have archived it: finish, both sides
                await self._best_effort(intent, QUEUED, _reason(exc))
                self._nudge()
            else:
                await self._best_effort(intent, None, None)
            raise
        return intent

    async def settle(self, session: AsyncSession, intent: Intent) -> None:
        """In the request's transaction, the room written: retire the intent with it. An
        intent the reconciler has claimed (the request outlived the grace) fails the request."""
        result = await session.execute(delete(TABLE).where(*_unclaimed(intent)))
        if _rowcount(result) != 1:
            raise RoomOperationTakenOver()

    async def hand_over(self, session: AsyncSession, intent: Intent) -> None:
        """In the request's transaction: the room is not kept (a concurrent create won), the
        reconciler archives the remote one once this commits."""
        now = utcnow()
        await session.execute(
            update(TABLE)
            .where(*_unclaimed(intent))
            .values(status=QUEUED, next_attempt_at=now, updated_at=now)
        )
        after_commit(session, self._after_commit)

    async def _after_commit(self) -> None:
        self._nudge()

    # ------------------------------------------------------------------ on the way out

    async def _undo(self, intent: Intent, error: str) -> None:
        where = {"error": error, "tenant": intent.tenant_id, "room": intent.room_id}
        if intent.action == FINISH_ARCHIVE:
            log.warning("room archive did not commit: finishing it", extra=where)
            await self._best_effort(intent, QUEUED, "the local archive did not commit")
            self._nudge()
            return
        if intent.remote_id is None:  # Personeo never answered: the reconciler decides
            return
        try:
            await self._personeo.archive_room(intent.upstream, intent.remote_id)
        except PersoneoUnavailable as exc:
            log.warning(
                "room did not commit and Personeo kept it: queued",
                extra={**where, "compensation": type(exc).__name__},
            )
            await self._best_effort(intent, QUEUED, _reason(exc), attempts=1)
            return
        log.warning("room did not commit: archived at Personeo", extra=where)
        await self._best_effort(intent, DONE, "undone at once")

    async def _open(
        self, session: AsyncSession, intent: Intent, requested_by: str | None = None
    ) -> Intent:
        now = utcnow()
        await self._write(
            insert(TABLE).values(
                id=intent.id,
                tenant_id=intent.tenant_id,
                room_id=intent.room_id,
                action=intent.action,
                remote_id=intent.remote_id,
                requested_by=requested_by,
                status=PENDING,
                attempts=0,
                next_attempt_at=now + self._grace,
                created_at=now,
                updated_at=now,
            )
        )
        session.info.setdefault(INTENTS, []).append(intent)
        return intent

    async def _best_effort(
        self, intent: Intent, status: str | None, detail: str | None, attempts: int = 0
    ) -> None:
        """Own transaction, guarded on the intent being the request's (pending, unclaimed):
        None deletes it; a failure leaves it pending, for the reconciler after the grace."""
        now = utcnow()
        due = now + timedelta(seconds=self.policy.backoff(attempts)) if attempts else now
        statement: Executable = (
            delete(TABLE).where(*_unclaimed(intent))
            if status is None
            else update(TABLE)
            .where(*_unclaimed(intent))
            .values(status=status, attempts=attempts, next_attempt_at=due, last_error=detail,
                    updated_at=now, done_at=now if status in (DONE, DEAD) else None)
        )  # fmt: skip
        try:
            await self._write(statement)
        except Exception as exc:
            log.warning(
                "rooms intent not updated: the reconciler takes it after the grace",
                extra={"error": type(exc).__name__, "tenant": intent.tenant_id,
                       "room": intent.room_id},
            )  # fmt: skip

    async def _write(self, statement: Executable) -> None:
        async with self.db.session_scope() as session:
            await session.execute(statement)


def _where(intent: Intent) -> Any:
    return update(TABLE).where(TABLE.c.id == intent.id)


def _unclaimed(intent: Intent) -> tuple[Any, ...]:
    return (TABLE.c.id == intent.id, TABLE.c.status == PENDING, TABLE.c.claim.is_(None))


def _forget(session: AsyncSession, intent: Intent) -> None:
    intents: list[Intent] = session.info.get(INTENTS, [])
    if intent in intents:
        intents.remove(intent)


def _reason(exc: PersoneoUnavailable) -> str:
    return str((exc.details or {}).get("reason", "failed"))[:200]


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))
