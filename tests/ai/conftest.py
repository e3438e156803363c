"""AI fixtures: a gateway with a tenant, the official OpenAI SDK pointed at it, usage reads.

Every test that generates runs the real SmolLM2-135M model (llama.cpp) with a handful of
tokens; the SDK talks to the app through httpx2's ASGI transport (openai>=3 uses httpx2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import httpx2
import openai
import pytest
from sqlalchemy import select

from novaza_gateway.billing.models import UsageRecord
from novaza_gateway.core.metering import QuotaVerdict
from tests.conftest import Gateway

MODEL = "smollm2-135m-instruct"
AI_ONLY = "ai:use"


@dataclass
class AiGateway:
    gw: Gateway
    tenant_id: str
    slug: str = "clinic"

    def token(self, scopes: str = AI_ONLY, tenant: str | None = None) -> str:
        return self.gw.token(tenant or self.slug, scopes)

    def auth(self, scopes: str = AI_ONLY) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes)}"}

    def sdk(self, token: str | None = None) -> openai.AsyncOpenAI:
        return sdk_for(self.gw.app, token or self.token())


def sdk_for(app: object, token: str, base_url: str = "http://gateway") -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=base_url)
    return openai.AsyncOpenAI(
        api_key=token, base_url=f"{base_url}/ai", http_client=http, max_retries=0
    )


async def with_tenant(gw: Gateway) -> AiGateway:
    tenant = await gw.create_tenant("clinic", plan="starter")
    return AiGateway(gw, tenant["id"])


@pytest.fixture
async def ai(gateway: Gateway) -> AsyncIterator[AiGateway]:
    """On SQLite and PostgreSQL."""
    yield await with_tenant(gateway)


@pytest.fixture
async def ai_lite(gw: Gateway) -> AsyncIterator[AiGateway]:
    """On SQLite only: behaviour that does not depend on the store."""
    yield await with_tenant(gw)


async def metered(gw: Gateway, tenant_id: str, meter: str = "ai_tokens") -> list[UsageRecord]:
    """Flush the process's usage and read what the billing table holds for the tenant."""
    await gw.app.state.billing.meter.flush(gw.app.state.db)
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(UsageRecord)
            .where(UsageRecord.tenant_id == tenant_id, UsageRecord.meter == meter)
            .order_by(UsageRecord.id)
        )
        return list(rows.scalars())


class FakeQuota:
    """``core.metering.UsageQuota`` with a verdict the test sets."""

    def __init__(self, verdict: QuotaVerdict) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, str]] = []

    async def check(self, tenant_id: str, meter: str) -> QuotaVerdict:
        self.calls.append((tenant_id, meter))
        return self.verdict


def verdict(allowed: bool, allowance: int, used: int, resets_at: datetime) -> QuotaVerdict:
    return QuotaVerdict(
        allowed=allowed, allowance=allowance, used=used, prepaid_available=0, resets_at=resets_at
    )
