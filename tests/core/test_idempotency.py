"""core.idempotency against the real stores: claim, replay, reuse, what is not stored, expiry,
scope, and two transactions racing for one key on PostgreSQL (the unique index decides)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Row, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from novaza_gateway.config import Settings
from novaza_gateway.core.audit import Actor, AuditEvent, record
from novaza_gateway.core.db import Database, create_engine, utcnow
from novaza_gateway.core.errors import ApiError, Conflict, UpstreamUnavailable, ValidationFailed
from novaza_gateway.core.idempotency import (
    KEYS,
    REPLAYED_HEADER,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    IdempotencyKeys,
    KeyedRequest,
    Operation,
    Outcome,
    sha256,
)

OP = "test.op"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(
        create_engine(Settings(database_url=db_url, data_dir=Path("/tmp")).sqlalchemy_url)
    )
    yield database
    await database.dispose()


@dataclass
class Counter:
    """An operation that writes an audit row per run and answers its run number."""

    runs: int = 0
    fail_with: list[ApiError | Outcome] = field(default_factory=list)

    def op(self, session: AsyncSession) -> Operation:
        async def execute() -> Outcome:
            self.runs += 1
            record(session, Actor("tester", "t1"), "test.run", "thing", str(self.runs))
            await session.flush()
            if self.fail_with:
                failure = self.fail_with.pop(0)
                if isinstance(failure, ApiError):
                    raise failure
                return failure
            return Outcome(201, b'{"run": %d}' % self.runs)

        return execute


async def call(
    db: Database,
    keys: IdempotencyKeys,
    counter: Counter,
    key: str = "k-1",
    body: bytes = b'{"a": 1}',
    tenant: str = "t1",
    operation: str = OP,
) -> Response:
    async with db.session_scope() as session:
        return await keys.run(
            session, tenant, operation, KeyedRequest(key, body), counter.op(session)
        )


async def audit_rows(db: Database) -> int:
    async with db.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


async def key_rows(db: Database) -> list[Row[Any]]:
    async with db.sessionmaker() as session:
        return list((await session.execute(select(KEYS))).all())


async def test_the_first_answer_is_stored_and_replayed_byte_for_byte(db: Database) -> None:
    keys, counter = IdempotencyKeys(3600), Counter()
    first = await call(db, keys, counter)
    assert (first.status_code, first.body) == (201, b'{"run": 1}')
    assert REPLAYED_HEADER.lower() not in first.headers
    again = await call(db, keys, counter)
    assert (again.status_code, again.body) == (201, b'{"run": 1}')
    assert again.headers[REPLAYED_HEADER] == "true"
    assert again.headers["content-type"] == "application/json"
    assert counter.runs == 1 and await audit_rows(db) == 1
    [row] = await key_rows(db)
    assert row.key_hash == sha256(b"k-1") and "k-1" not in repr(tuple(row))
    assert row.fingerprint == sha256(b'{"a": 1}')


async def test_another_body_with_the_same_key_is_refused(db: Database) -> None:
    keys, counter = IdempotencyKeys(3600), Counter()
    await call(db, keys, counter)
    with pytest.raises(IdempotencyKeyReused) as refused:
        await call(db, keys, counter, body=b'{"a": 2}')
    assert (refused.value.status, refused.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert counter.runs == 1


async def test_try_again_answers_are_not_stored_and_a_retry_runs(db: Database) -> None:
    keys = IdempotencyKeys(3600)
    counter = Counter(fail_with=[UpstreamUnavailable(status=503), Conflict()])
    with pytest.raises(UpstreamUnavailable):
        await call(db, keys, counter)
    with pytest.raises(Conflict):
        await call(db, keys, counter)
    assert await key_rows(db) == [] and await audit_rows(db) == 0  # all rolled back
    counter.fail_with = [Outcome(502, b"{}")]  # answered, not raised: writes kept, key not
    assert (await call(db, keys, counter)).status_code == 502
    assert await key_rows(db) == [] and await audit_rows(db) == 1
    done = await call(db, keys, counter)
    assert (done.status_code, done.body, counter.runs) == (201, b'{"run": 4}', 4)
    assert REPLAYED_HEADER.lower() not in done.headers


async def test_a_client_error_is_stored_without_the_operations_writes(db: Database) -> None:
    keys = IdempotencyKeys(3600)
    counter = Counter(fail_with=[ValidationFailed.field("x", "bad")])
    first = await call(db, keys, counter)
    assert first.status_code == 422 and b'"VALIDATION_FAILED"' in first.body
    assert await audit_rows(db) == 0  # the savepoint dropped the audit row of the run
    again = await call(db, keys, counter)
    assert (again.status_code, again.body) == (422, first.body)
    assert again.headers[REPLAYED_HEADER] == "true" and counter.runs == 1


async def test_keys_are_scoped_by_tenant_and_operation(db: Database) -> None:
    keys, counter = IdempotencyKeys(3600), Counter()
    await call(db, keys, counter, tenant="t1")
    other_tenant = await call(db, keys, counter, tenant="t2")
    other_op = await call(db, keys, counter, operation="test.other")
    assert REPLAYED_HEADER.lower() not in other_tenant.headers
    assert REPLAYED_HEADER.lower() not in other_op.headers
    assert counter.runs == 3 and len(await key_rows(db)) == 3


async def test_an_expired_key_runs_again_and_the_purge_drops_expired_rows(db: Database) -> None:
    keys, counter = IdempotencyKeys(3600), Counter()
    await call(db, keys, counter, key="old")
    await call(db, keys, counter, key="live")
    async with db.session_scope() as session:
        await session.execute(
            update(KEYS)
            .where(KEYS.c.key_hash == sha256(b"old"))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    again = await call(db, keys, counter, key="old", body=b"another body is fine now")
    assert REPLAYED_HEADER.lower() not in again.headers and counter.runs == 3
    [row] = [r for r in await key_rows(db) if r.key_hash == sha256(b"old")]
    assert row.expires_at > utcnow() + timedelta(seconds=3500)

    async with db.session_scope() as session:
        await session.execute(update(KEYS).values(expires_at=KEYS.c.created_at))
    await call(db, keys, counter, key="fresh")
    assert await keys.purge_expired(db, batch=1) == 1  # in batches
    assert await keys.purge_expired(db) == 1
    assert await keys.purge_expired(db) == 0
    assert [r.key_hash for r in await key_rows(db)] == [sha256(b"fresh")]


# ------------------------------------------------------------------ racing, PostgreSQL


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Database]:
    """SQLite serializes writers: the race is PostgreSQL's."""
    database = Database(
        create_engine(Settings(database_url=pg_url, data_dir=Path("/tmp")).sqlalchemy_url)
    )
    yield database
    await database.dispose()


async def _held_first(
    db: Database, keys: IdempotencyKeys, release: asyncio.Event, counter: Counter
) -> Response:
    """The first request: claims the key, then holds its transaction until ``release``."""
    async with db.session_scope() as session:
        inner = counter.op(session)

        async def slow() -> Outcome:
            answer = await inner()
            await release.wait()
            return answer

        return await keys.run(session, "t1", OP, KeyedRequest("k", b"b"), slow)


async def test_a_second_request_waits_for_the_first_and_replays_it(pg_db: Database) -> None:
    db = pg_db
    keys, counter, release = IdempotencyKeys(3600), Counter(), asyncio.Event()
    first = asyncio.create_task(_held_first(db, keys, release, counter))
    while counter.runs == 0:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(call(db, keys, counter, key="k", body=b"b"))
    await asyncio.sleep(0.3)
    assert not second.done()  # waiting on the unique index, not running
    release.set()
    one, two = await asyncio.gather(first, second)
    assert counter.runs == 1 and await audit_rows(db) == 1
    assert one.body == two.body and two.headers[REPLAYED_HEADER] == "true"


async def test_past_the_wait_the_second_request_is_told_the_key_is_in_use(
    pg_db: Database,
) -> None:
    db = pg_db
    holder, counter, release = IdempotencyKeys(3600), Counter(), asyncio.Event()
    first = asyncio.create_task(_held_first(db, holder, release, counter))
    while counter.runs == 0:
        await asyncio.sleep(0.01)
    impatient = IdempotencyKeys(3600, wait_seconds=0.1)
    with pytest.raises(IdempotencyKeyInUse) as busy:
        await call(db, impatient, counter, key="k", body=b"b")
    assert (busy.value.status, busy.value.code) == (409, "IDEMPOTENCY_KEY_IN_USE")
    release.set()
    await first
    assert counter.runs == 1


async def test_when_the_first_rolls_back_the_waiting_one_runs(pg_db: Database) -> None:
    db = pg_db
    keys, counter, release = IdempotencyKeys(3600), Counter(), asyncio.Event()
    counter.fail_with = [UpstreamUnavailable(status=503)]
    first = asyncio.create_task(_held_first(db, keys, release, counter))
    while counter.runs == 0:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(call(db, keys, counter, key="k", body=b"b"))
    await asyncio.sleep(0.2)
    release.set()
    with pytest.raises(UpstreamUnavailable):
        await first
    answer = await second
    assert answer.body == b'{"run": 2}' and REPLAYED_HEADER.lower() not in answer.headers
    assert await audit_rows(db) == 1  # the first run's row rolled back


async def test_the_wait_bound_does_not_outlive_the_claim(pg_db: Database) -> None:
    db = pg_db
    keys, counter = IdempotencyKeys(3600, wait_seconds=0.25), Counter()
    async with db.session_scope() as session:
        before = await session.scalar(text("SHOW lock_timeout"))
        await keys.run(session, "t1", OP, KeyedRequest("k", b"b"), counter.op(session))
        assert await session.scalar(text("SHOW lock_timeout")) == before
