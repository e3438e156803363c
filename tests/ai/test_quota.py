"""The AI token allowance: checked before generating, refused with AI_QUOTA_EXCEEDED."""

from __future__ import annotations

import math
from datetime import timedelta

import openai
import pytest

from novaza_gateway.core.db import utcnow
from tests.ai.conftest import MODEL, AiGateway, FakeQuota, loaded, metered, verdict

HELLO = [{"role": "user", "content": "Hello"}]


async def test_refused_when_the_allowance_is_spent(ai_lite: AiGateway) -> None:
    resets = utcnow() + timedelta(days=3, seconds=30)
    quota = FakeQuota(verdict(False, 1000, 1200, resets))
    ai_lite.gw.app.state.ai.quota = quota
    with pytest.raises(openai.RateLimitError) as caught:
        await ai_lite.sdk().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    response = caught.value.response
    body = response.json()
    assert body["code"] == "AI_QUOTA_EXCEEDED"
    assert body["details"]["allowance"] == 1000 and body["details"]["used"] == 1200
    assert body["details"]["resetsAt"].endswith("Z")
    # never a Retry-After shorter than the time left until the allowance resets
    assert int(response.headers["retry-after"]) >= math.floor(timedelta(days=3).total_seconds())
    assert quota.calls == [(ai_lite.tenant_id, "ai_tokens")]

    agent = await ai_lite.gw.client.post(
        "/ai/agents/clinical-note-summarizer/message",
        json={"message": "Note.", "maxTokens": 2},
        headers=ai_lite.auth(),
    )
    assert (agent.status_code, agent.json()["code"]) == (429, "AI_QUOTA_EXCEEDED")
    assert await metered(ai_lite.gw, ai_lite.tenant_id) == []  # nothing generated
    health = (await ai_lite.gw.client.get("/ai/health", headers=ai_lite.auth())).json()
    assert health["models"][0]["state"] == "not_loaded"  # refused before the model


async def test_remaining_tokens_header_from_the_verdict(ai_lite: AiGateway) -> None:
    ai_lite.gw.app.state.ai.quota = FakeQuota(verdict(True, 5000, 1234, utcnow()))
    raw = await ai_lite.sdk().chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=1
    )
    assert raw.headers["x-ratelimit-remaining-tokens"] == "3766"
    assert raw.headers["x-ratelimit-limit-tokens"] == "5000"


async def test_billing_allowance_stops_a_tenant_once_used(ai: AiGateway) -> None:
    """End to end with billing's QuotaBook: an override that covers one completion and not
    a second; the refusal says what is left."""
    gw = ai.gw
    await loaded(gw)  # prompts counted by the tokenizer
    response = await gw.client.put(
        "/admin/tenants/clinic/entitlements/overrides", json={"aiTokens": 50}, headers=gw.admin()
    )
    assert response.status_code == 200, response.text
    gw.app.state.billing.quota.max_age = 0.0  # read the period's usage afresh on every check
    client = ai.sdk()
    first = await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    assert first.usage is not None and 25 < first.usage.total_tokens <= 50 - 16
    await metered(gw, ai.tenant_id)  # flushed: the verdict now sees the tokens
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    details = caught.value.response.json()["details"]
    assert details["allowance"] == 50
    assert details["used"] == first.usage.total_tokens
    assert details["remaining"] == 50 - first.usage.total_tokens
