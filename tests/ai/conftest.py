"""AI fixtures: a gateway with a tenant, the official OpenAI SDK pointed at it, usage reads.

Every test that generates runs the real SmolLM2-135M model (llama.cpp) with a handful of
tokens; the SDK talks to the app through httpx2's ASGI transport (openai>=3 uses httpx2).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import httpx2
import openai
import pytest
import uvicorn
from sqlalchemy import select

from novaza_gateway.ai.engine import ChatMessage, GenerationRequest
from novaza_gateway.billing.models import UsageRecord
from novaza_gateway.core.metering import QuotaReservation, QuotaVerdict
from tests.conftest import Gateway, free_port

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


async def loaded(gw: Gateway, model: str = MODEL) -> None:
    """Load the local model (as ``NOVAZA_AI_PRELOAD`` does): its tokenizer counts prompts
    exactly from then on; before, admission reserves a prompt's upper bound."""
    engine = gw.app.state.ai.registry.get(model).engine
    engine.start(preload=True)
    deadline = time.monotonic() + 30
    while engine.state != "ready":
        assert engine.state != "failed" and time.monotonic() < deadline, engine.state
        await asyncio.sleep(0.01)


async def allow(ai: AiGateway, tokens: int) -> None:
    """Give the tenant an allowance of ``tokens`` for the period; every reservation then reads
    the period afresh (no cached snapshot: the most interleaving between requests)."""
    response = await ai.gw.client.put(
        f"/admin/tenants/{ai.slug}/entitlements/overrides",
        json={"aiTokens": tokens},
        headers=ai.gw.admin(),
    )
    assert response.status_code == 200, response.text
    ai.gw.app.state.billing.quota.max_age = 0.0


def outstanding(ai: AiGateway) -> int:
    """The tokens billing's quota holds for the tenant's requests in progress."""
    held: int = ai.gw.app.state.billing.quota.outstanding(ai.tenant_id)
    return held


async def prompt_tokens(gw: Gateway, *messages: ChatMessage, model: str = MODEL) -> int:
    """The prompt's tokens as the engine will count them (the model must be loaded)."""
    provider = gw.app.state.ai.registry.get(model)
    estimate = await provider.estimate(GenerationRequest(messages, max_tokens=1))
    assert estimate.exact
    count: int = estimate.prompt_tokens
    return count


@contextlib.asynccontextmanager
async def over_tcp(app: object) -> AsyncIterator[str]:
    """The app served by uvicorn on a local port, in this event loop: a client that hangs up
    is seen as a disconnect (the ASGI test transport buffers whole answers)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


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
    """``core.metering.UsageQuota`` with a verdict the test sets: an allowed verdict covers
    any reservation, a refused one none."""

    def __init__(self, verdict: QuotaVerdict) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, str]] = []
        self.released: list[QuotaReservation] = []

    async def check(self, tenant_id: str, meter: str) -> QuotaVerdict:
        self.calls.append((tenant_id, meter))
        return self.verdict

    async def reserve(
        self, tenant_id: str, meter: str, quantity: int, *, minimum: int, ttl_seconds: float
    ) -> QuotaReservation:
        self.calls.append((tenant_id, meter))
        granted = quantity if self.verdict.allowed else 0
        return QuotaReservation(
            len(self.calls), tenant_id, meter, quantity, granted, granted, self.verdict
        )

    def release(self, reservation: QuotaReservation) -> None:
        self.released.append(reservation)


def verdict(allowed: bool, allowance: int, used: int, resets_at: datetime) -> QuotaVerdict:
    return QuotaVerdict(
        allowed=allowed, allowance=allowance, used=used, prepaid_available=0, resets_at=resets_at
    )
