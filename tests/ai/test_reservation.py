"""Token reservations at admission (ADR 0041): a request never takes a tenant past what it can
consume by its own max_tokens, concurrent requests cannot both take the last tokens, a cap the
caller did not choose is lowered to what is left, and every reservation is released once the
request ends, however it ends. Real SmolLM2 through the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from novaza_gateway.ai.engine import ChatMessage, ModelRun
from novaza_gateway.ai.estimate import prompt_bound
from novaza_gateway.core.metering import AI_TOKENS, dimensions
from tests.ai.conftest import (
    MODEL,
    AiGateway,
    allow,
    loaded,
    metered,
    outstanding,
    over_tcp,
    prompt_tokens,
    with_tenant,
)
from tests.billing.test_prepaid import ALLOWANCE, credit
from tests.conftest import gateway_settings, start_gateway

HELLO = [{"role": "user", "content": "Hello"}]
HELLO_PROMPT = ChatMessage("user", "Hello")
EXACTLY = {"ignore_eos": True}  # generate exactly the cap: the worst case for the allowance
SUMMARIZER = "clinical-note-summarizer"
NOTE = "Chest pain for two days, troponin normal, ECG normal. Discharged with follow-up."


async def ready(ai: AiGateway) -> int:
    """The model loaded (prompts counted exactly); answers HELLO's prompt tokens."""
    await loaded(ai.gw)
    return await prompt_tokens(ai.gw, HELLO_PROMPT)


def refusal(caught: pytest.ExceptionInfo[openai.RateLimitError]) -> dict[str, Any]:
    body: dict[str, Any] = caught.value.response.json()
    assert body["code"] == "AI_QUOTA_EXCEEDED"
    details: dict[str, Any] = body["details"]
    return details


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ never past the allowance


async def test_concurrent_requests_never_pass_the_allowance(ai: AiGateway) -> None:
    p = await ready(ai)
    allowance = 2 * (p + 8) + p + 7  # two requests fit; a third is one token short
    await allow(ai, allowance)
    client = ai.sdk()
    results = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=8, extra_body=EXACTLY
            )
            for _ in range(4)
        ),
        return_exceptions=True,
    )
    answers = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(answers), len(refused)) == (2, 2), results
    for error in refused:
        details = error.response.json()["details"]
        assert (details["remaining"], details["promptTokens"], details["maxTokens"]) == (
            p + 7,
            p,
            7,
        )
    assert all(a.usage is not None and a.usage.total_tokens == p + 8 for a in answers)
    rows = await metered(ai.gw, ai.tenant_id)
    assert sum(r.quantity for r in rows) == 2 * (p + 8) <= allowance

    # Two requests without max_tokens share what is left: the first is capped, the second
    # finds nothing left; together they stay within the allowance.
    allowance = 2 * (p + 8) + p + 20
    await allow(ai, allowance)
    capped, empty = await asyncio.gather(
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_body=EXACTLY),
        client.chat.completions.create(model=MODEL, messages=HELLO, extra_body=EXACTLY),
        return_exceptions=True,
    )
    if isinstance(capped, BaseException):
        capped, empty = empty, capped
    assert isinstance(empty, openai.RateLimitError)
    assert empty.response.json()["details"]["remaining"] == 0
    assert not isinstance(capped, BaseException) and capped.usage is not None
    assert (capped.choices[0].finish_reason, capped.usage.completion_tokens) == ("length", 20)
    rows = await metered(ai.gw, ai.tenant_id)
    assert sum(r.quantity for r in rows) == allowance
    assert outstanding(ai) == 0


async def test_an_implicit_cap_ends_with_length_an_explicit_one_is_refused(
    ai_lite: AiGateway,
) -> None:
    p = await ready(ai_lite)
    await allow(ai_lite, p + 18)
    client = ai_lite.sdk()
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=19)
    details = refusal(caught)
    assert (details["remaining"], details["promptTokens"], details["maxTokens"]) == (p + 18, p, 18)
    assert "max_tokens at most 18" in caught.value.response.json()["message"]
    assert await metered(ai_lite.gw, ai_lite.tenant_id) == []  # refused before generating

    stream = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACTLY,
    )
    chunks = [chunk async for chunk in stream]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (p, 18)

    with pytest.raises(openai.RateLimitError) as caught:  # nothing left: as before
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert refusal(caught)["remaining"] == 0
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert outstanding(ai_lite) == 0


async def test_agent_messages_are_capped_or_refused_the_same_way(ai_lite: AiGateway) -> None:
    gw = ai_lite.gw
    await loaded(gw)
    agent = await gw.app.state.ai.agents.get(ai_lite.tenant_id, SUMMARIZER)
    p = await prompt_tokens(
        gw, ChatMessage("system", agent.system_prompt), ChatMessage("user", NOTE)
    )
    await allow(ai_lite, p + 20)
    url = f"/ai/agents/{SUMMARIZER}/message"
    refused = await gw.client.post(
        url, json={"message": NOTE, "maxTokens": 21}, headers=ai_lite.auth()
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["details"]["maxTokens"] == 20
    capped = await gw.client.post(url, json={"message": NOTE}, headers=ai_lite.auth())
    assert capped.status_code == 200, capped.text
    reply = capped.json()
    assert reply["usage"]["promptTokens"] == p
    assert reply["usage"]["completionTokens"] <= 20  # the agent's own budget is 200
    assert reply["finishReason"] == "length"
    assert outstanding(ai_lite) == 0


# ------------------------------------------------------------------ released however it ends


async def test_released_after_a_completion_and_a_stream(ai_lite: AiGateway) -> None:
    p = await ready(ai_lite)
    client = ai_lite.sdk()
    task = asyncio.create_task(
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6)
    )
    await until(lambda: outstanding(ai_lite) > 0 or task.done())
    assert outstanding(ai_lite) == p + 6  # held while it generates
    await task
    assert outstanding(ai_lite) == 0

    async with over_tcp(ai_lite.gw.app) as url:  # streamed as generated, not buffered
        tcp = openai.AsyncOpenAI(api_key=ai_lite.token(), base_url=f"{url}/ai", max_retries=0)
        stream = await tcp.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=6, stream=True, extra_body=EXACTLY
        )
        first = await anext(aiter(stream))
        assert first.choices[0].delta.role == "assistant"
        assert outstanding(ai_lite) == p + 6
        rest = [chunk async for chunk in stream]
        assert rest[-1].choices[0].finish_reason == "length"
        assert outstanding(ai_lite) == 0


async def test_released_when_the_client_hangs_up_mid_stream(ai_lite: AiGateway) -> None:
    p = await ready(ai_lite)
    engine = ai_lite.gw.app.state.ai.registry.get(MODEL).engine
    async with over_tcp(ai_lite.gw.app) as url:
        client = openai.AsyncOpenAI(api_key=ai_lite.token(), base_url=f"{url}/ai", max_retries=0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=1500, stream=True, extra_body=EXACTLY
        )
        seen = 0
        async for _chunk in stream:
            seen += 1
            if seen == 4:
                break
        assert outstanding(ai_lite) == p + 1500
        await stream.close()  # hang up
        await until(lambda: outstanding(ai_lite) == 0)
    assert engine.in_flight == 0
    [completion] = [
        r for r in await metered(ai_lite.gw, ai_lite.tenant_id) if "completion" in r.dimensions
    ]
    assert 3 <= completion.quantity < 1500  # stopped early, and billed what it generated


class Breaks:
    """A model run that fails after two tokens."""

    def __init__(self, run: ModelRun) -> None:
        self.run = run

    @property
    def prompt_tokens(self) -> int:
        return self.run.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.run.completion_tokens

    @property
    def finish_reason(self) -> Any:
        return self.run.finish_reason

    def __iter__(self) -> Iterator[str]:
        for n, piece in enumerate(self.run):
            if n == 2:
                raise RuntimeError("the model broke")
            yield piece

    def close(self) -> None:
        self.run.close()


async def test_released_after_an_engine_failure_a_timeout_and_a_refusal(
    ai_lite: AiGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ready(ai_lite)
    client = ai_lite.sdk()
    engine = ai_lite.gw.app.state.ai.registry.get(MODEL).engine
    start = engine.model.start
    monkeypatch.setattr(engine.model, "start", lambda request: Breaks(start(request)))
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert caught.value.status_code == 500
    assert outstanding(ai_lite) == 0
    rows = await metered(ai_lite.gw, ai_lite.tenant_id)
    # two tokens sent, the third generated when the run broke: all three billed
    assert {r.dimensions.split(",")[0]: r.quantity for r in rows}["kind=completion"] == 3
    monkeypatch.undo()

    engine.timeout_seconds = 0.0  # past its deadline before it starts
    with pytest.raises(openai.APIStatusError) as timeout:
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert timeout.value.status_code == 504
    assert outstanding(ai_lite) == 0

    await engine.stop()  # the provider refuses the request at submit: released by the service
    with pytest.raises(openai.APIStatusError) as gone:
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert gone.value.response.json()["code"] == "AI_MODEL_UNAVAILABLE"
    assert outstanding(ai_lite) == 0


# ------------------------------------------------------------------ prepaid from the wallet


async def test_the_wallet_covers_reservations_past_the_allowance(ai: AiGateway) -> None:
    p = await ready(ai)
    meter = ai.gw.app.state.billing.meter
    ai.gw.app.state.billing.quota.max_age = 0.0
    meter.record(ai.tenant_id, AI_TOKENS, ALLOWANCE, dimensions=dimensions(kind="prompt"))
    client = ai.sdk()
    with pytest.raises(openai.RateLimitError) as caught:  # allowance spent, empty wallet
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert refusal(caught)["remaining"] == 0

    await credit(ai.gw, ai.slug, 1)  # 1 cent pays up to 7,499 tokens at 20 per 100,000
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=4, extra_body=EXACTLY
    )
    assert raw.parse().usage.total_tokens == p + 4  # type: ignore[union-attr]
    assert raw.headers["x-ratelimit-remaining-tokens"] == "0"  # the allowance is spent
    assert outstanding(ai) == 0

    meter.record(ai.tenant_id, AI_TOKENS, 7_500, dimensions=dimensions(kind="prompt"))
    with pytest.raises(openai.RateLimitError) as caught:  # the wallet is spent too
        await client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert refusal(caught)["remaining"] == 0
    assert outstanding(ai) == 0


# ------------------------------------------------------------------ an OpenAI-compatible upstream


async def test_an_upstream_model_is_reserved_by_the_prompt_bound(
    ai_lite: AiGateway, tmp_path: Path, sqlite_template: Path
) -> None:
    """The relaying gateway has no tokenizer for the upstream's model: the prompt is reserved
    at its upper bound (UTF-8 bytes plus markup), the cap lowered to fit what is left."""
    upstream = ai_lite
    async with over_tcp(upstream.gw.app) as url:
        target = tmp_path / "relay" / "novaza.db"
        target.parent.mkdir(parents=True)
        target.write_bytes(sqlite_template.read_bytes())
        settings = gateway_settings(
            target.parent,
            f"sqlite:///{target}",
            ai_upstream_url=f"{url}/ai",
            ai_upstream_api_key=upstream.token(),
            ai_upstream_models=f"remote-smol={MODEL}",
        )
        async for gw in start_gateway(settings):
            relay = await with_tenant(gw)
            bound = prompt_bound([HELLO_PROMPT])
            await allow(relay, bound + 20)
            client = relay.sdk()
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(
                    model="remote-smol", messages=HELLO, max_tokens=21
                )
            details = refusal(caught)
            assert (details["promptTokens"], details["maxTokens"]) == (bound, 20)

            answer = await client.chat.completions.create(
                model="remote-smol", messages=HELLO, extra_body=EXACTLY
            )
            assert answer.usage is not None
            assert (answer.choices[0].finish_reason, answer.usage.completion_tokens) == (
                "length",
                20,
            )
            assert answer.usage.total_tokens <= bound + 20
            assert outstanding(relay) == 0
