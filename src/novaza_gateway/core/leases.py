"""Leases: a named periodic job run by one replica at a time, on PostgreSQL and SQLite alike.

A lease is a row of ``leases``: the job's name, who holds it, until when (ADR 0062).
``acquire`` takes a free or lapsed lease, or renews the caller's own, in one statement:
``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE holder = me OR expires_at < now``,
answering whether a row came back. PostgreSQL locks the conflicting row and re-checks the
WHERE against whatever a competing acquire committed; SQLite has one writer at a time. So
of replicas racing for a lease exactly one gets it; the holder keeps it by renewing it every
pass, and when the holder dies the lease lapses and another replica takes it on its next
try. ``release`` (a clean stop) frees it at once.

A lease makes a periodic job run once instead of N times; it is not what keeps the job
correct. A holder stalled past its lease (a stopped VM, a store that hung) can overlap with
the next one, so every leased job must stay safe when run twice at once (guarded updates,
row locks): closing periods locks the subscription, the purge deletes by id. Durable work
items (outbox messages) are claimed per row instead, so replicas share them. Times are the
replicas' own clocks, as everywhere in the gateway: skew between hosts must stay well under
a lease (NTP keeps it to milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import String, Table, case, delete, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, Database, UtcDateTime, utcnow
from novaza_gateway.core.ids import new_id

log = logging.getLogger("novaza.leases")


class Lease(Base):
    """Who runs the job ``name`` until ``expires_at`` (since ``acquired_at``)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())


LEASES = cast(Table, Lease.__table__)


def holder_name() -> str:
    """This process, recognisably to an operator: host (the pod's name), pid, a random tail
    (a restarted pod with the same name and pid is another holder)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{new_id()[:8]}"


class Leases:
    """One replica's side of the ``leases`` table: built once per app, shared by its jobs."""

    def __init__(self, db: Database, holder: str | None = None) -> None:
        self.db = db
        self.holder = holder or holder_name()

    async def acquire(self, name: str, seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``seconds``; False while another holds it.
        Shielded: a loop cancelled at shutdown lets the statement finish and commit, rather
        than leave a connection mid-transaction (on SQLite, holding the write lock the final
        usage flush then waits for)."""
        return await asyncio.shield(self._acquire(name, seconds))

    async def _acquire(self, name: str, seconds: float) -> bool:
        now = utcnow()
        row = {"name": name, "holder": self.holder, "acquired_at": now,
               "expires_at": now + timedelta(seconds=seconds)}  # fmt: skip
        async with self.db.session_scope() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = insert(LEASES).values(row)
            mine = LEASES.c.holder == self.holder
            statement = statement.on_conflict_do_update(
                index_elements=[LEASES.c.name],
                set_={
                    "holder": statement.excluded.holder,
                    "expires_at": statement.excluded.expires_at,
                    "acquired_at": case((mine, LEASES.c.acquired_at), else_=now),
                },
                where=or_(mine, LEASES.c.expires_at < now),
            )
            return (await session.execute(statement.returning(LEASES.c.name))).first() is not None

    async def release(self, name: str) -> None:
        """Give the lease up (only if this replica holds it): the next try of any replica
        takes it, without waiting for it to lapse."""
        async with self.db.session_scope() as session:
            await session.execute(
                delete(LEASES).where(LEASES.c.name == name, LEASES.c.holder == self.holder)
            )

    async def release_quietly(self, name: str) -> None:
        """At shutdown: release if the store answers within 2 s; otherwise the lease lapses."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.shield(self.release(name))  # finishes even when given up on


def lease_seconds(every: float) -> float:
    """A lease for a job that runs every ``every`` seconds: three passes, at least 30 s, so
    the holder renews it twice before it could lapse and a dead holder's job waits at most
    that long for another replica."""
    return max(3 * every, 30.0)


def leased(
    leases: Leases, name: str, seconds: float, job: Callable[[], Awaitable[int]]
) -> Callable[[], Awaitable[int]]:
    """``job`` run only by the lease holder: a pass answers 0 on the other replicas."""

    async def run() -> int:
        if not await leases.acquire(name, seconds):
            return 0
        return await job()

    return run
