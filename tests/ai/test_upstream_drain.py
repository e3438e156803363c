"""An OpenAI-compatible upstream's streams when the gateway drains (SIGTERM, ADR 0066): new
requests refused with 503, the stream still running at the deadline ended with that 503 and
its usage, over a real HTTP upstream that streams until told to stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from novaza_gateway.ai.engine import (
    ChatMessage,
    Ending,
    Failed,
    GenerationRequest,
    TextDelta,
)
from novaza_gateway.ai.errors import AiShuttingDown
from novaza_gateway.ai.upstream import UpstreamProvider, upstream_info
from tests.ai.conftest import over_tcp

REQUEST = GenerationRequest((ChatMessage("user", "Count."),), max_tokens=10_000)


async def endless(request: Request) -> StreamingResponse:
    """Chunks every 20 ms until the client hangs up."""

    async def chunks() -> AsyncIterator[bytes]:
        number = 0
        while True:
            number += 1
            chunk = {"choices": [{"index": 0, "delta": {"content": f"{number} "}}]}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            await asyncio.sleep(0.02)

    return StreamingResponse(chunks(), media_type="text/event-stream")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", endless, methods=["POST"])])
    async with over_tcp(app) as url:
        yield f"{url}/v1"


async def test_drain_refuses_new_requests_and_ends_the_running_stream_with_a_503(
    upstream: str,
) -> None:
    endings: list[Ending] = []
    async with httpx.AsyncClient() as http:
        provider = UpstreamProvider(
            upstream_info("remote", 2048),
            "remote",
            upstream,
            None,
            http,
            timeout_seconds=30,
            max_concurrency=4,
        )
        events = provider.submit(REQUEST, endings.append).events()
        assert isinstance(await anext(events), TextDelta)
        provider.drain(0.3)
        with pytest.raises(AiShuttingDown):
            provider.submit(REQUEST)
        rest = [event async for event in events]
    assert sum(isinstance(e, TextDelta) for e in rest) > 0  # it went on until the deadline
    ending = rest[-1]
    assert isinstance(ending, Failed) and isinstance(ending.error, AiShuttingDown)
    assert (ending.error.status, ending.error.headers["Retry-After"]) == (503, "1")
    assert endings == [ending] and ending.usage.completion_tokens > 0  # metered
    assert provider.in_flight == 0
