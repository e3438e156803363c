"""AI over a real ``novaza serve`` process: streaming as it is generated, a client that hangs
up mid-stream (the generation stops, its tokens are billed), a full queue (503), and the same
process as the OpenAI-compatible upstream of an in-process gateway."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests import procs
from tests.ai.conftest import MODEL, AiGateway, metered, with_tenant
from tests.conftest import gateway_settings, start_gateway
from tests.test_process import copy_database

LONG = {"max_tokens": 1500, "extra_body": {"ignore_eos": True}}
COUNT = [{"role": "user", "content": "Count from one to one hundred."}]


@dataclass
class Served:
    server: procs.ServeProcess
    token: str
    db: Path

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.token, base_url=f"{self.server.url}/ai", max_retries=0, timeout=60
        )

    def health(self) -> dict[str, object]:
        response = httpx.get(
            f"{self.server.url}/ai/health", headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code == 200, response.text
        model: dict[str, object] = response.json()["models"][0]
        return model

    def billed(self, completion_id: str) -> dict[str, int]:
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute(
                "SELECT event_id, quantity FROM billing_usage WHERE event_id LIKE ?",
                (f"{completion_id}:%",),
            ).fetchall()
        return {event.rsplit(":", 1)[1]: quantity for event, quantity in rows}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("ai-served") / "data"
    env = procs.novaza_env(
        data_dir, copy_database(sqlite_template, data_dir), ai_queue_size="1", ai_preload="true"
    )
    create, token = procs.run_cli_parallel(
        (env, ("tenants", "create", "clinic", "--name", "Clinic", "--activate")),
        (env, ("token", "--tenant", "clinic", "--scope", "ai:use")),
    )
    assert create.returncode == 0, create.stderr
    with procs.serving(env) as server:
        served = Served(server, token.stdout.strip(), data_dir / "novaza.db")
        deadline = time.monotonic() + 30
        while served.health()["state"] != "ready":  # NOVAZA_AI_PRELOAD: loaded in background
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        yield served


def test_readiness_shows_the_preloaded_model(served: Served) -> None:
    check = httpx.get(f"{served.server.url}/health/ready").json()["checks"]["ai"]
    assert check["status"] == "ok" and check["critical"] is False
    assert check["detail"] == f"{MODEL} ready, 0 queued"


async def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_tokens_stream_as_they_are_generated(served: Served) -> None:
    stream = await served.sdk().chat.completions.create(
        model=MODEL,
        messages=COUNT,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    arrivals: list[float] = []
    text = []
    async for chunk in stream:
        arrivals.append(time.perf_counter())
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
    assert chunk.usage is not None and chunk.usage.completion_tokens == 40
    assert "".join(text)
    # 40 tokens take a while on a CPU: the first ones arrived well before the last
    assert arrivals[-1] - arrivals[1] > 0.1
    assert len(arrivals) >= 20  # one chunk per token with text (a piece may be empty)


async def test_a_client_leaving_mid_stream_stops_generation_and_is_billed(served: Served) -> None:
    before = served.health()
    client = served.sdk()
    stream = await client.chat.completions.create(model=MODEL, messages=COUNT, stream=True, **LONG)
    seen = 0
    async for chunk in stream:
        completion_id = chunk.id
        seen += 1
        if seen == 5:
            break
    await stream.close()  # hang up
    await wait_for(lambda: served.health()["completed"] == before["completed"] + 1)
    after = served.health()
    generated = int(after["tokensGenerated"]) - int(before["tokensGenerated"])  # type: ignore[call-overload]
    assert 4 <= generated < 1500, generated  # stopped long before max_tokens
    assert after["inFlight"] == 0
    await wait_for(lambda: "completion" in served.billed(completion_id))  # flushed each second
    billed = served.billed(completion_id)
    assert billed["completion"] == generated and billed["prompt"] > 0


async def test_a_full_queue_answers_503(served: Served) -> None:
    client = served.sdk()
    holding = await client.chat.completions.create(model=MODEL, messages=COUNT, stream=True, **LONG)
    first = await anext(aiter(holding))
    assert first.choices[0].delta.role == "assistant"
    await wait_for(lambda: served.health()["inFlight"] == 1)
    queued = asyncio.create_task(
        client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=2)
    )
    await wait_for(lambda: served.health()["queueDepth"] == 1)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=2)
    assert caught.value.status_code == 503
    assert caught.value.response.json()["code"] == "AI_OVERLOADED"
    assert caught.value.response.headers["retry-after"] == "1"
    await holding.close()
    answer = await queued  # the waiting request runs once the worker is free
    assert answer.choices[0].message.content is not None


# ------------------------------------------------------------------ an OpenAI-compatible upstream


@pytest.fixture
async def relaying(served: Served, tmp_path: Path, sqlite_url: str) -> AsyncIterator[AiGateway]:
    """An in-process gateway serving ``remote-smol`` through the served gateway's /ai API."""
    settings = gateway_settings(
        tmp_path / "data",
        sqlite_url,
        ai_upstream_url=f"{served.server.url}/ai",
        ai_upstream_api_key=served.token,
        ai_upstream_models=f"remote-smol={MODEL}",
    )
    async for gw in start_gateway(settings):
        yield await with_tenant(gw)


async def test_a_model_served_by_an_upstream_gateway(served: Served, relaying: AiGateway) -> None:
    client = relaying.sdk()
    assert {m.id for m in (await client.models.list()).data} == {MODEL, "remote-smol"}
    upstream_before = served.health()["completed"]
    answer = await client.chat.completions.create(
        model="remote-smol", messages=COUNT, max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert answer.model == "remote-smol"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert served.health()["completed"] == int(upstream_before) + 1  # type: ignore[call-overload]

    stream = await client.chat.completions.create(
        model="remote-smol",
        messages=COUNT,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    rows = await metered(relaying.gw, relaying.tenant_id)
    assert {r.dimensions for r in rows} == {
        "kind=completion,model=remote-smol",
        "kind=prompt,model=remote-smol",
    }
    assert sum(r.quantity for r in rows) == (
        answer.usage.total_tokens + chunks[-1].usage.total_tokens
    )
    local = (await relaying.gw.client.get("/ai/health", headers=relaying.auth())).json()
    remote = {m["id"]: m for m in local["models"]}["remote-smol"]
    assert (remote["provider"], remote["completed"], remote["error"]) == (
        "openai-compatible",
        2,
        None,
    )


async def test_an_upstream_refusal_is_upstream_unavailable(
    served: Served, tmp_path: Path, sqlite_url: str
) -> None:
    settings = gateway_settings(
        tmp_path / "data",
        sqlite_url,
        ai_upstream_url=f"{served.server.url}/ai",
        ai_upstream_api_key="not-a-token",
        ai_upstream_models="remote-smol",  # unknown upstream too, but refused first
    )
    async for gw in start_gateway(settings):
        ai = await with_tenant(gw)
        with pytest.raises(openai.APIStatusError) as caught:
            await ai.sdk().chat.completions.create(model="remote-smol", messages=COUNT)
        assert caught.value.status_code == 502
        assert caught.value.response.json()["code"] == "UPSTREAM_UNAVAILABLE"
        assert "token" not in caught.value.response.text  # never the upstream's own words
