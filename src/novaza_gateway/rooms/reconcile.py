"""The reconciler: finishes what a request announced in ``rooms_reconcile`` and never committed.

Each pass claims what is due (``pending`` intents past the grace, whose request is gone, and
``queued`` ones past their backoff) with a claim token and a lease, so replicas never work
the same row at once; a claim is a guarded UPDATE, which PostgreSQL re-checks after a
competing claim commits and SQLite serializes. Then per intent:

- ``undo_create``: ``DELETE {baseUrl}/rooms/{remoteId}`` unless the local room holds that
  remote id after all; 200/202/204/404 is done.
- ``finish_archive``: the same DELETE, then the local room is archived, if it is still
  active with that remote id, with its audit record (actor ``rooms-reconcile``).

A failure is retried with exponential backoff and full jitter up to ``max_attempts``, then
``dead``, as is an intent whose remote id was never learnt (the request died while Personeo
was answering) or whose tenant no longer names a Personeo. Dead intents show in readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core import audit
from novaza_gateway.core.db import Database, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.outboxloop import run_passes
from novaza_gateway.rooms.errors import PersoneoUnavailable
from novaza_gateway.rooms.journal import (
    DEAD,
    DONE,
    FINISH_ARCHIVE,
    PENDING,
    QUEUED,
    TABLE,
    UNDO_CREATE,
    ReconcilePolicy,
)
from novaza_gateway.rooms.models import ACTIVE, ARCHIVED, RESOURCE, Room, snapshot
from novaza_gateway.rooms.personeo import PersoneoClient, Upstream

log = logging.getLogger("novaza.rooms.reconcile")
ACTOR = "rooms-reconcile"
BATCH = 50

Sections = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str | None  # DONE or DEAD; None: try again
    detail: str | None


class Reconciler:
    def __init__(
        self,
        db: Database,
        personeo: PersoneoClient,
        sections: Sections,
        policy: ReconcilePolicy,
        upstream_timeout_seconds: float,
    ) -> None:
        self.db = db
        self.policy = policy
        self._personeo = personeo
        self._sections = sections
        self._lease = timedelta(seconds=2 * upstream_timeout_seconds + 5)
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await run_passes(self.run_once, self._wake, self.policy.poll_seconds, log)

    async def run_once(self) -> int:
        """One pass: claim what is due, settle each (in parallel). Answers a count."""
        token, rows = await self._claim()
        await asyncio.gather(*(self._settle(token, row) for row in rows))
        return len(rows)

    async def note(self) -> str:
        """The readiness detail: what is waiting, what gave up."""
        query = (
            select(TABLE.c.status, func.count())
            .where(TABLE.c.status.in_([PENDING, QUEUED, DEAD]))
            .group_by(TABLE.c.status)
        )
        async with self.db.sessionmaker() as session:
            counts: dict[str, int] = {s: n for s, n in (await session.execute(query)).all()}
        return (
            f"{counts.get(QUEUED, 0)} queued, {counts.get(DEAD, 0)} dead, "
            f"{counts.get(PENDING, 0)} in flight"
        )

    async def _claim(self) -> tuple[str, list[Row[Any]]]:
        now = utcnow()
        due = and_(
            TABLE.c.status.in_([PENDING, QUEUED]),
            TABLE.c.next_attempt_at <= now,
            or_(TABLE.c.claim.is_(None), TABLE.c.lease_until < now),
        )
        token = new_id()
        async with self.db.session_scope() as session:
            query = select(TABLE.c.id).where(due).order_by(TABLE.c.next_attempt_at).limit(BATCH)
            ids = list((await session.execute(query)).scalars())
            if not ids:
                return token, []
            await session.execute(
                update(TABLE)
                .where(TABLE.c.id.in_(ids), due)
                .values(claim=token, lease_until=now + self._lease)
            )
        async with self.db.session_scope() as session:
            query = select(TABLE).where(TABLE.c.claim == token)
            return token, list((await session.execute(query)).all())

    async def _settle(self, token: str, row: Row[Any]) -> None:
        try:
            outcome = await self._attempt(row)
            await self._record(token, row, outcome)
        except Exception as exc:  # the lease expires and the intent is tried again
            log.warning(
                "rooms reconcile failed",
                extra={"error": type(exc).__name__, "tenant": row.tenant_id, "room": row.room_id},
            )

    async def _attempt(self, row: Row[Any]) -> Outcome:
        if row.remote_id is None:
            return Outcome(DEAD, "remote id unknown: find the room by externalId")
        upstream = Upstream.from_section(await self._sections(row.tenant_id))
        if upstream is None:
            return Outcome(DEAD, "the tenant names no Personeo")
        if row.action == UNDO_CREATE and await self._room_holds(row):
            return Outcome(DONE, "kept: the room holds this remote id")
        try:
            await self._personeo.archive_room(upstream, row.remote_id)
        except PersoneoUnavailable as exc:
            return Outcome(None, str((exc.details or {}).get("reason", "failed"))[:200])
        return Outcome(DONE, None)

    async def _room_holds(self, row: Row[Any]) -> bool:
        query = select(Room.id).where(
            Room.tenant_id == row.tenant_id,
            Room.id == row.room_id,
            Room.remote_id == row.remote_id,
            Room.status == ACTIVE,
        )
        async with self.db.sessionmaker() as session:
            return (await session.execute(query)).first() is not None

    async def _record(self, token: str, row: Row[Any], outcome: Outcome) -> None:
        now = utcnow()
        attempts = row.attempts + 1
        status, due = outcome.status, now
        if status is None:
            status = DEAD if attempts >= self.policy.max_attempts else QUEUED
            due = now + timedelta(seconds=self.policy.backoff(attempts))
        async with self.db.session_scope() as session:
            result = await session.execute(
                update(TABLE)
                .where(TABLE.c.id == row.id, TABLE.c.claim == token)
                .values(status=status, attempts=attempts, next_attempt_at=due, claim=None,
                        lease_until=None, last_error=outcome.detail, updated_at=now,
                        done_at=now if status in (DONE, DEAD) else None)
            )  # fmt: skip
            mine = int(getattr(result, "rowcount", 0)) == 1
            if mine and status == DONE and row.action == FINISH_ARCHIVE:
                await _archive_locally(session, row, now)
        if status == DEAD:
            log.warning(
                "rooms reconcile gave up",
                extra={"tenant": row.tenant_id, "room": row.room_id, "attempts": attempts},
            )


async def _archive_locally(session: AsyncSession, row: Row[Any], now: datetime) -> None:
    """Personeo archived the room: so does the gateway, if nothing moved on meanwhile."""
    guard = (
        Room.tenant_id == row.tenant_id,
        Room.id == row.room_id,
        Room.status == ACTIVE,
        Room.remote_id == row.remote_id,
    )
    room = (await session.execute(select(Room).where(*guard))).scalar_one_or_none()
    if room is None:
        return
    before = snapshot(room)
    result = await session.execute(
        update(Room)
        .where(*guard)
        .values(status=ARCHIVED, archived_at=now, updated_at=now,
                archived_by=row.requested_by or ACTOR)
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    if int(getattr(result, "rowcount", 0)) != 1:
        return
    after = {**before, "status": ARCHIVED, "reconciled": True}
    audit.record(
        session,
        audit.Actor(ACTOR, row.tenant_id),
        "room.archived",
        RESOURCE,
        room.id,
        tenant_id=row.tenant_id,
        patient_id=room.patient_id,
        before=before,
        after=after,
    )
