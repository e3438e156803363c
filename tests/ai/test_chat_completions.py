"""``/ai/chat/completions`` and ``/ai/models`` through the official OpenAI SDK, real model."""

from __future__ import annotations

import openai
import pytest

from tests.ai.conftest import MODEL, AiGateway, metered

HELLO = [{"role": "user", "content": "Say hello to the nurse."}]


async def test_models_list_in_openai_format(ai_lite: AiGateway) -> None:
    models = await ai_lite.sdk().models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].object == "model"
    assert models.data[0].owned_by == "novaza"
    assert models.data[0].created > 0
    raw = await ai_lite.gw.client.get("/ai/models", headers=ai_lite.auth())
    assert raw.json()["object"] == "list"
    assert set(raw.json()["data"][0]) == {"id", "object", "created", "owned_by"}


async def test_completion_is_generated_and_metered(ai: AiGateway) -> None:
    client = ai.sdk()
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, seed=1
    )
    answer = raw.parse()
    assert answer.id.startswith("chatcmpl-")
    assert answer.object == "chat.completion"
    assert answer.model == MODEL
    [choice] = answer.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert 1 <= usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # LiteLLM-style allowance headers from billing's quota (starter: 1,000,000 tokens)
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) <= 1_000_000

    rows = await metered(ai.gw, ai.tenant_id)
    by_kind = {r.dimensions: r for r in rows}
    prompt = by_kind[f"kind=prompt,model={MODEL}"]
    completion = by_kind[f"kind=completion,model={MODEL}"]
    assert (prompt.quantity, completion.quantity) == (usage.prompt_tokens, usage.completion_tokens)
    assert (prompt.source, prompt.event_id) == ("ai", f"{answer.id}:prompt")
    assert completion.event_id == f"{answer.id}:completion"
    requests = await metered(ai.gw, ai.tenant_id, "api_requests")
    assert sum(r.quantity for r in requests if r.dimensions == "area=ai") == 1


async def test_greedy_decoding_is_repeatable_and_max_tokens_cuts(ai_lite: AiGateway) -> None:
    client = ai_lite.sdk()
    answers = [
        await client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Count: one, two,"}]},
            ],
            max_completion_tokens=3,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        for _ in range(2)
    ]
    first, second = answers
    assert first.choices[0].finish_reason == "length"
    assert first.usage is not None and first.usage.completion_tokens == 3
    assert first.choices[0].message.content == second.choices[0].message.content


async def test_stop_sequence_ends_the_answer(ai_lite: AiGateway) -> None:
    client = ai_lite.sdk()
    free = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    )
    text = free.choices[0].message.content or ""
    assert len(text) > 4
    stop = text[2:4]
    cut = await client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in (cut.choices[0].message.content or "")
    assert text.startswith(cut.choices[0].message.content or "")


async def test_streaming_through_the_sdk(ai: AiGateway) -> None:
    client = ai.sdk()
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.id == chunks[0].id and c.id.startswith("chatcmpl-") for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and not any(finishes[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert 1 <= last.usage.completion_tokens <= 6
    assert text
    rows = await metered(ai.gw, ai.tenant_id)
    assert {r.event_id for r in rows} == {f"{last.id}:prompt", f"{last.id}:completion"}
    assert sum(r.quantity for r in rows) == last.usage.total_tokens


async def test_raw_stream_ends_with_done(ai_lite: AiGateway) -> None:
    response = await ai_lite.gw.client.post(
        "/ai/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 3, "stream": True},
        headers=ai_lite.auth(),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in response.text  # only with stream_options.include_usage


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"model": MODEL, "messages": HELLO, "n": 2}, "n"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"model": MODEL, "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": MODEL, "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": MODEL, "messages": HELLO, "stream_options": {"include_usage": True}}, "body"),
    ],
)
async def test_invalid_requests_are_validation_failed(
    ai_lite: AiGateway, body: dict[str, object], path: str
) -> None:
    response = await ai_lite.gw.client.post(
        "/ai/chat/completions", json=body, headers=ai_lite.auth()
    )
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "VALIDATION_FAILED"
    assert any(e["path"].startswith(path) for e in error["details"]["errors"]), error


async def test_n_above_one_through_the_sdk(ai_lite: AiGateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await ai_lite.sdk().chat.completions.create(model=MODEL, messages=HELLO, n=2)
    assert caught.value.body["code"] == "VALIDATION_FAILED"  # type: ignore[index]
    assert "n=1" in caught.value.body["message"]  # type: ignore[index]


async def test_unknown_model_is_404(ai_lite: AiGateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await ai_lite.sdk().chat.completions.create(model="gpt-17", messages=HELLO)
    assert caught.value.body["code"] == "MODEL_NOT_FOUND"  # type: ignore[index]
    assert caught.value.response.headers["x-api-version"] == "1.0"


async def test_auth_and_scope(ai_lite: AiGateway) -> None:
    client = ai_lite.gw.client
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    for path in ("/ai/health", "/ai/models", "/ai/agents"):
        assert (await client.get(path)).status_code == 401
        wrong = await client.get(path, headers=ai_lite.auth("imaging:read"))
        assert (wrong.status_code, wrong.json()["code"]) == (403, "FORBIDDEN")
    missing = await client.post("/ai/chat/completions", json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(openai.PermissionDeniedError):
        await ai_lite.sdk(ai_lite.token("hl7:write")).chat.completions.create(
            model=MODEL, messages=HELLO
        )
    with pytest.raises(openai.AuthenticationError):
        await ai_lite.sdk("not-a-token").models.list()


async def test_ai_health(ai_lite: AiGateway) -> None:
    before = await ai_lite.gw.client.get("/ai/health", headers=ai_lite.auth())
    assert before.status_code == 200
    body = before.json()
    assert body["status"] == "ok"
    [model] = body["models"]
    assert model["id"] == MODEL
    assert model["state"] == "not_loaded"  # loaded on first use, not at start-up
    assert (model["queueDepth"], model["inFlight"], body["queueDepth"]) == (0, 0, 0)
    await ai_lite.sdk().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    after = (await ai_lite.gw.client.get("/ai/health", headers=ai_lite.auth())).json()
    [model] = after["models"]
    assert model["state"] == "ready"
    assert model["completed"] == 1 and model["loadSeconds"] > 0
    ready = (await ai_lite.gw.client.get("/health/ready")).json()
    assert "ai" not in ready["checks"]  # loaded on demand: not a readiness concern
