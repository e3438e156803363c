"""Upstream push: the durable outbox of contact versions drained to each tenant's Desk.

A sync writes the changed contacts' rows here in its own transaction; this worker claims
what is due (``queued`` -> ``sending`` with a claim token and a lease, so replicas never
push the same rows at once; read ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas
claiming at once take disjoint rows instead of waiting on each other; ADR 0062), POSTs them
per tenant to ``{baseUrl}/contacts/batch`` through the app's shared ``httpx.AsyncClient``,
and records the outcome. A 2xx answer delivers the batch (the contacts' ``syncStatus``
becomes ``synced``); a network error, a timeout, a 5xx, 408 or 429 is retried with
exponential backoff and full jitter up to ``max_attempts``, then dead (``failed``); any
other 4xx is dead at once. Delivery is at-least-once: each contact
carries its ``version`` so the Desk can drop a repeat. A queued version is superseded when
a newer one of the same contact is queued.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Row, and_, bindparam, or_, select, update

from novaza_gateway.config import DeskConfig
from novaza_gateway.core import audit
from novaza_gateway.core.db import Database, utcnow
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.outboxloop import run_passes
from novaza_gateway.desk import bulk
from novaza_gateway.desk.repository import CONTACTS, DEAD, DELIVERED, OUTBOX, QUEUED, SENDING
from novaza_gateway.desk.upstream import TenantDeskSettings

log = logging.getLogger("novaza.desk.outbox")
BATCH = 200
ACTOR = "desk-outbox"
RETRYABLE = {408, 425, 429}


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    permanent: bool
    detail: str | None


def backoff(attempt: int, config: DeskConfig) -> float:
    """Exponential backoff with full jitter: uniform in [base, min(max, base * 2^(n-1))]."""
    ceiling = min(config.backoff_max_seconds, config.backoff_seconds * 2 ** max(0, attempt - 1))
    return random.uniform(config.backoff_seconds, max(config.backoff_seconds, ceiling))


class DeskPusher:
    lease_margin_seconds = 5.0  # past the push's deadline: its record, clock skew

    def __init__(
        self,
        config: DeskConfig,
        db: Database,
        settings: TenantDeskSettings,
        http: httpx.AsyncClient,
    ) -> None:
        self.config = config
        self.db = db
        self.settings = settings
        self.http = http
        self._wake = asyncio.Event()

    async def nudge(self) -> None:
        """An after-commit hook: new versions are in the outbox."""
        self._wake.set()

    async def run(self) -> None:
        await run_passes(self.run_once, self._wake, self.config.outbox_poll_seconds, log)

    async def run_once(self) -> int:
        """One pass: claim what is due, push it (tenants in parallel). Answers a count."""
        token, rows = await self._claim()
        by_tenant: dict[str, list[Row[Any]]] = defaultdict(list)
        for row in rows:
            by_tenant[row.tenant_id].append(row)
        await asyncio.gather(*(self._push(token, batch) for batch in by_tenant.values()))
        return len(rows)

    async def _claim(self) -> tuple[str, list[Row[Any]]]:
        now = utcnow()
        due = or_(
            and_(OUTBOX.c.status == QUEUED, OUTBOX.c.next_attempt_at <= now),
            and_(OUTBOX.c.status == SENDING, OUTBOX.c.lease_until < now),
        )
        token = new_id()
        lease = now + timedelta(
            seconds=2 * self.config.push_timeout_seconds + self.lease_margin_seconds
        )
        async with self.db.session_scope() as session:
            query = select(OUTBOX.c.id).where(due).order_by(OUTBOX.c.next_attempt_at).limit(BATCH)
            if session.get_bind().dialect.name == "postgresql":  # replicas take disjoint rows
                query = query.with_for_update(skip_locked=True)
            ids = list((await session.execute(query)).scalars())
            if not ids:
                return token, []
            await session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id.in_(ids), due)
                .values(status=SENDING, claim=token, lease_until=lease)
            )
        async with self.db.session_scope() as session:
            query = select(OUTBOX).where(OUTBOX.c.claim == token, OUTBOX.c.status == SENDING)
            return token, list((await session.execute(query.order_by(OUTBOX.c.created_at))).all())

    async def _push(self, token: str, batch: list[Row[Any]]) -> None:
        tenant_id = batch[0].tenant_id
        settings = await self.settings.for_tenant(tenant_id)
        if settings is None or settings.base_url is None:
            outcome = Outcome(False, True, "the tenant names no Desk")
        else:
            url = str(settings.base_url).rstrip("/") + "/contacts/batch"
            headers = {"Content-Type": "application/json"}
            if settings.api_key is not None:
                headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
            outcome = await self._post(url, headers, [row.payload for row in batch])
        try:
            await self._record(token, batch, outcome)
        except Exception as exc:  # the lease expires and the batch is pushed again
            log.warning("desk outbox record failed", extra={"error": type(exc).__name__})

    async def _post(self, url: str, headers: dict[str, str], contacts: list[Any]) -> Outcome:
        try:  # the whole exchange within the timeout: the claim's lease must outlast it
            async with asyncio.timeout(self.config.push_timeout_seconds):
                response = await self.http.post(
                    url,
                    json={"contacts": contacts},
                    headers=headers,
                    timeout=self.config.push_timeout_seconds,
                )
        except TimeoutError:
            return Outcome(False, False, "Timeout")
        except httpx.HTTPError as exc:
            return Outcome(False, False, type(exc).__name__)
        if response.is_success:
            return Outcome(True, False, None)
        permanent = 400 <= response.status_code < 500 and response.status_code not in RETRYABLE
        return Outcome(False, permanent, f"HTTP {response.status_code}")

    async def _record(self, token: str, batch: list[Row[Any]], outcome: Outcome) -> None:
        now = utcnow()
        rows, statuses = [], []
        for row in batch:
            attempts = row.attempts + 1
            status, due = self._next(outcome, attempts, now)
            rows.append({"b_id": row.id, "b_token": token, "status": status, "attempts": attempts,
                         "next_attempt_at": due, "last_error": outcome.detail,
                         "delivered_at": now if outcome.delivered else None})  # fmt: skip
            if status in (DELIVERED, DEAD):
                sync = "synced" if status == DELIVERED else "failed"
                statuses.append({"b_id": row.contact_id, "b_version": row.version, "s": sync})
        async with self.db.session_scope() as session:
            await session.execute(
                update(OUTBOX)
                .where(OUTBOX.c.id == bindparam("b_id"), OUTBOX.c.claim == bindparam("b_token"))
                .values(claim=None, lease_until=None, updated_at=now),
                rows,
            )
            if statuses:
                await session.execute(
                    update(CONTACTS)
                    .where(
                        CONTACTS.c.tenant_id == batch[0].tenant_id,
                        CONTACTS.c.id == bindparam("b_id"),
                        CONTACTS.c.version == bindparam("b_version"),
                    )
                    .values(sync_status=bindparam("s")),
                    statuses,
                )
            if outcome.delivered:
                await self._audit(session, batch)

    def _next(self, outcome: Outcome, attempts: int, now: datetime) -> tuple[str, datetime]:
        if outcome.delivered:
            return DELIVERED, now
        if outcome.permanent or attempts >= self.config.max_attempts:
            return DEAD, now
        return QUEUED, now + timedelta(seconds=backoff(attempts, self.config))

    @staticmethod
    async def _audit(session: Any, batch: list[Row[Any]]) -> None:
        """Patient-linked contacts sent out of the gateway: a disclosure, recorded."""
        rows = [
            audit.values(
                audit.Actor(ACTOR, row.tenant_id),
                "desk.contact.push",
                "desk_contact",
                row.contact_id,
                patient_id=row.payload.get("patientId"),
                after={"version": row.version},
            )
            for row in batch
            if row.payload.get("patientId")
        ]
        await bulk.insert_rows(session, audit.AuditEvent.__table__, rows)  # type: ignore[arg-type]
