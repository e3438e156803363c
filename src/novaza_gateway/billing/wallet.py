"""The wallet: an append-only ledger in integer minor units, one entry per idempotency key.

Every posting first takes the tenant's wallet row for writing (a no-op UPDATE: a row lock on
PostgreSQL, the write lock on SQLite), so postings for one tenant run one at a time. Under
that lock the key is looked up (same key: the first entry is the answer; same key with
another request: ``IDEMPOTENCY_KEY_REUSED``), the floor is checked, and the balance cache and
the entry are written together. The unique (tenant, key) constraint is the last line of
defence. ``balance`` always equals the sum of the entries.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.billing.errors import (
    CurrencyMismatch,
    IdempotencyKeyReused,
    InsufficientFunds,
)
from novaza_gateway.billing.models import Wallet, WalletEntry


@dataclass(frozen=True, slots=True)
class Posting:
    tenant_id: str
    key: str
    kind: str
    amount: int  # positive credits, negative debits
    currency: str
    description: str
    reference: str | None = None
    request: dict[str, Any] | None = None  # what the key stands for; defaults to the posting

    def request_hash(self) -> str:
        request = self.request or {
            "kind": self.kind,
            "amount": self.amount,
            "currency": self.currency,
            "reference": self.reference,
        }
        return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def lock_wallet(
    session: AsyncSession, tenant_id: str, currency: str, now: datetime
) -> Wallet:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(Wallet)
        .values(
            tenant_id=tenant_id, currency=currency, balance=0, floor=0, entries=0, updated_at=now
        )
        .on_conflict_do_nothing(index_elements=["tenant_id"])
    )
    await session.execute(
        update(Wallet).where(Wallet.tenant_id == tenant_id).values(updated_at=now)
    )
    wallet = await session.get(Wallet, tenant_id, populate_existing=True)
    assert wallet is not None
    return wallet


async def entry_by_key(session: AsyncSession, tenant_id: str, key: str) -> WalletEntry | None:
    query = select(WalletEntry).where(
        WalletEntry.tenant_id == tenant_id, WalletEntry.idempotency_key == key
    )
    return (await session.execute(query)).scalar_one_or_none()


async def post(
    session: AsyncSession, posting: Posting, now: datetime, *, wallet_currency: str
) -> tuple[WalletEntry, bool]:
    """The entry for the posting's key, and whether this call created it. A tenant's first
    posting opens its wallet in ``wallet_currency`` (the subscription's)."""
    wallet = await lock_wallet(session, posting.tenant_id, wallet_currency, now)
    digest = posting.request_hash()
    existing = await entry_by_key(session, posting.tenant_id, posting.key)
    if existing is not None:
        if existing.request_hash != digest:
            raise IdempotencyKeyReused()
        return existing, False
    if posting.currency != wallet.currency:
        raise CurrencyMismatch(details={"walletCurrency": wallet.currency})
    balance = wallet.balance + posting.amount
    if posting.amount < 0 and balance < wallet.floor:
        raise InsufficientFunds(
            details={"balance": wallet.balance, "floor": wallet.floor, "amount": posting.amount}
        )
    wallet.balance = balance
    wallet.entries += 1
    entry = WalletEntry(
        id=str(uuid.uuid4()),
        tenant_id=posting.tenant_id,
        seq=wallet.entries,
        idempotency_key=posting.key,
        request_hash=digest,
        kind=posting.kind,
        amount=posting.amount,
        currency=posting.currency,
        balance_after=balance,
        description=posting.description,
        reference=posting.reference,
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    return entry, True


async def set_floor(
    session: AsyncSession, tenant_id: str, floor: int, currency: str, now: datetime
) -> tuple[Wallet, int]:
    """Change the floor under the wallet's lock, the one every posting takes: a debit is
    checked against the floor in force when it posts, never one changed halfway. Answers
    the wallet and the previous floor. Raising the floor above the balance is allowed: it
    stops further debits until credits bring the balance back up."""
    wallet = await lock_wallet(session, tenant_id, currency, now)
    previous = wallet.floor
    wallet.floor = floor
    return wallet, previous


async def available(session: AsyncSession, tenant_id: str) -> int:
    """What the wallet can pay without crossing its floor (0 when it has no wallet)."""
    wallet = await session.get(Wallet, tenant_id, populate_existing=True)
    return max(0, wallet.balance - wallet.floor) if wallet else 0


async def get_wallet(session: AsyncSession, tenant_id: str) -> Wallet | None:
    return await session.get(Wallet, tenant_id)


async def recent_entries(
    session: AsyncSession, tenant_id: str, limit: int
) -> Sequence[WalletEntry]:
    query = (
        select(WalletEntry)
        .where(WalletEntry.tenant_id == tenant_id)
        .order_by(WalletEntry.seq.desc())
        .limit(limit)
    )
    return (await session.execute(query)).scalars().all()
