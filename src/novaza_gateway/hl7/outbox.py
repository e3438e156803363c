"""ORU delivery: the durable outbox drained over MLLP, one reused connection per destination.

A message is claimed (``queued`` -> ``sending`` with a claim token and a lease, ADR 0062),
sent, and its ACK read with a timeout; MSA-2 must name the message's MSH-10. AA: delivered.
AE, a wrong or missing ACK, a timeout or a dropped connection: retried with exponential
backoff and full jitter until ``outbox_max_attempts``, then dead. AR: dead at once. Dead
messages stay visible, can be re-queued, and never block the messages behind them. FIFO
holds per patient: only the oldest undelivered message of a patient is sent. Delivery is
at-least-once: a message whose ACK was lost (or whose worker died mid-send) is sent again
after its lease expires.

With several replicas each message is sent by the one that claimed it: a send starts only
while its lease outlasts the ACK timeout (the lease is renewed first when it would not, and
the message skipped when the renewal finds it taken over), and the outcome is written only
under the claim token, so a sender that lost its claim never overwrites the new owner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from novaza_gateway.config import Hl7Config
from novaza_gateway.core import audit
from novaza_gateway.core.db import Database, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.outboxloop import run_passes
from novaza_gateway.hl7 import outbox_store
from novaza_gateway.hl7.ack import read_ack
from novaza_gateway.hl7.metrics import DELIVERY_ATTEMPTS
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from novaza_gateway.hl7.models import DeliveryAttempt
from novaza_gateway.hl7.parser import ParseError
from novaza_gateway.hl7.repository import DEAD, DELIVERED, QUEUED
from novaza_gateway.hl7.routing import TenantHl7Settings
from novaza_gateway.hl7.settings import Destination

log = logging.getLogger("novaza.hl7.outbox")
BATCH = 100
ACTOR = "hl7-outbox"


class MllpLink:
    """One MLLP client connection, opened on first use and reused until it fails."""

    def __init__(self, host: str, port: int, max_frame_bytes: int, ack_timeout: float) -> None:
        self.host, self.port = host, port
        self.max_frame_bytes = max_frame_bytes
        self.ack_timeout = ack_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = MllpDecoder(max_frame_bytes)

    async def exchange(self, payload: bytes) -> bytes:
        """Send one message and answer the next frame the peer sends back, within the timeout."""
        async with asyncio.timeout(self.ack_timeout):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self._decoder = MllpDecoder(self.max_frame_bytes)
            assert self._reader is not None
            self._writer.write(frame(payload))
            await self._writer.drain()
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise ConnectionResetError("the receiver closed the connection")
                frames = self._decoder.feed(chunk)
                if frames:
                    return frames[0]

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass(frozen=True, slots=True)
class Job:
    tenant_id: str
    message_id: str
    control_id: str
    destination: str
    patient_id: str | None
    raw: bytes
    attempts: int  # before this one
    token: str  # the claim


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: str  # AA, AE, AR, error, timeout, unroutable
    ack_code: str | None
    detail: str | None
    duration_ms: int


def backoff(attempt: int, config: Hl7Config) -> float:
    """Exponential backoff with full jitter: uniform in [base, min(max, base * 2^(n-1))]."""
    ceiling = min(config.backoff_max_seconds, config.backoff_seconds * 2 ** max(0, attempt - 1))
    return random.uniform(config.backoff_seconds, max(config.backoff_seconds, ceiling))


class OutboxWorker:
    lease_margin_seconds = 5.0  # clock skew between replicas must stay well under half this

    def __init__(self, config: Hl7Config, db: Database, settings: TenantHl7Settings) -> None:
        self.config = config
        self.db = db
        self.settings = settings
        self._wake = asyncio.Event()
        self._links: dict[tuple[str, int], MllpLink] = {}

    def wake(self) -> None:
        self._wake.set()

    async def nudge(self) -> None:
        """An after-commit hook: a new message is in the outbox."""
        self.wake()

    async def run(self) -> None:
        await run_passes(self.run_once, self._wake, self.config.outbox_poll_seconds, log)

    async def close(self) -> None:
        for link in self._links.values():
            await link.close()
        self._links.clear()

    @property
    def lease(self) -> timedelta:
        """A claim's lease: two ACK timeouts and a margin (one send, its record, slack)."""
        return timedelta(seconds=2 * self.config.ack_timeout_seconds + self.lease_margin_seconds)

    @property
    def send_window(self) -> timedelta:
        """What a send needs left on its lease: its ACK timeout and half the margin."""
        return timedelta(seconds=self.config.ack_timeout_seconds + self.lease_margin_seconds / 2)

    async def run_once(self) -> int:
        """One pass: claim what is due, deliver it (destinations in parallel). Answers a count."""
        lease_until, jobs = await self._claim()
        by_destination: dict[tuple[str, str], list[Job]] = defaultdict(list)
        for job in jobs:
            by_destination[(job.tenant_id, job.destination)].append(job)
        await asyncio.gather(
            *(self._drain(lease_until, batch) for batch in by_destination.values())
        )
        return len(jobs)

    async def _claim(self) -> tuple[datetime, list[Job]]:
        now = utcnow()
        token, lease_until = new_id(), now + self.lease
        async with self.db.session_scope() as session:
            tenants = await outbox_store.due_tenants(session, now)
        jobs: list[Job] = []
        for tenant_id in tenants:
            async with self.db.session_scope() as session:
                await outbox_store.release_stale(session, tenant_id, now)
                rows = await outbox_store.claim_due(
                    session, tenant_id, now, BATCH, token, lease_until
                )
            jobs += [
                Job(tenant_id, row.id, row.control_id, row.destination, row.patient_id,
                    row.raw, row.attempts, token)
                for row in rows
            ]  # fmt: skip
        return lease_until, jobs

    async def _drain(self, lease_until: datetime, batch: list[Job]) -> None:
        """One destination's messages, in order, over its one connection. A send starts only
        while the lease outlasts it: past that, the rest of the batch is renewed first."""
        settings = await self.settings.for_tenant(batch[0].tenant_id)
        destination = settings.destinations.get(batch[0].destination)
        left = list(batch)
        while left:
            job = left.pop(0)
            if destination is None:
                attempt = Attempt("unroutable", None, "destination not configured", 0)
            else:
                if utcnow() + self.send_window > lease_until:
                    lease_until, mine = await self._renew([job, *left])
                    if job.message_id not in mine:
                        left = [j for j in left if j.message_id in mine]
                        continue
                attempt = await self._send(job, destination)
            await self._record(job, attempt)

    async def _renew(self, jobs: list[Job]) -> tuple[datetime, set[str]]:
        """A fresh lease on these claimed messages; answers it and those still claimed."""
        lease_until = utcnow() + self.lease
        async with self.db.session_scope() as session:
            mine = await outbox_store.renew(
                session, jobs[0].tenant_id, [j.message_id for j in jobs], jobs[0].token,
                lease_until,
            )  # fmt: skip
        if len(mine) < len(jobs):
            log.warning(
                "hl7 outbox claims lost to another replica",
                extra={"tenant": jobs[0].tenant_id, "lost": len(jobs) - len(mine)},
            )
        return lease_until, mine

    async def _send(self, job: Job, destination: Destination) -> Attempt:
        key = (destination.host, destination.port)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = MllpLink(
                *key, self.config.max_frame_bytes, self.config.ack_timeout_seconds
            )
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            reply = await link.exchange(job.raw)
            ack = read_ack(reply)
        except TimeoutError:
            await link.close()  # a late ACK must not be read as the next message's
            return Attempt("timeout", None, "no ACK in time", took())
        except (OSError, ParseError) as exc:
            await link.close()
            return Attempt("error", None, type(exc).__name__, took())
        if ack.acked_control_id != job.control_id:
            await link.close()
            return Attempt("error", ack.code, "ACK names another message (MSA-2)", took())
        return Attempt(ack.code, ack.code, ack.text[:255] or None, took())

    async def _record(self, job: Job, attempt: Attempt) -> None:
        """The attempt, always (it happened); the message's new state only under its claim."""
        DELIVERY_ATTEMPTS.labels(attempt.outcome).inc()
        now = utcnow()
        attempts = job.attempts + 1
        values = self._next_state(attempt, attempts, now)
        async with self.db.session_scope() as session:
            mine = await outbox_store.settle(
                session, job.tenant_id, job.message_id, job.token, values
            )
            session.add(
                DeliveryAttempt(
                    id=new_id(),
                    tenant_id=job.tenant_id,
                    message_id=job.message_id,
                    at=now,
                    outcome=attempt.outcome,
                    ack_code=attempt.ack_code,
                    detail=attempt.detail,
                    duration_ms=attempt.duration_ms,
                )
            )
            status = values["status"] if mine else "sent"  # sent, but the claim had lapsed
            audit.record(
                session,
                audit.Actor(ACTOR, job.tenant_id),
                f"hl7.oru.{status}",
                "hl7_message",
                job.message_id,
                patient_id=job.patient_id,
                outcome="success" if status == DELIVERED else "error",
                after={"attempt": attempts, "outcome": attempt.outcome},
            )
        if not mine:
            log.warning("hl7 outbox claim lost before the outcome was recorded",
                        extra={"tenant": job.tenant_id, "outcome": attempt.outcome})  # fmt: skip

    def _next_state(self, attempt: Attempt, attempts: int, now: datetime) -> dict[str, Any]:
        """The message's columns after this attempt (claim and lease released)."""
        values: dict[str, Any] = {"attempts": attempts, "updated_at": now, "lease_until": None,
                                  "claim": None, "ack_code": attempt.ack_code}  # fmt: skip
        if attempt.outcome == "AA":
            values.update(status=DELIVERED, delivered_at=now, last_error=None)
        elif attempt.outcome in ("AR", "unroutable") or attempts >= self.config.outbox_max_attempts:
            values.update(status=DEAD, last_error=attempt.detail or attempt.outcome)
        else:
            delay = timedelta(seconds=backoff(attempts, self.config))
            values.update(status=QUEUED, last_error=attempt.detail or attempt.outcome,
                          next_attempt_at=now + delay)  # fmt: skip
        return values
