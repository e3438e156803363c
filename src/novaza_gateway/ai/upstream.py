"""A model served by an OpenAI-compatible upstream (vLLM, llama.cpp's server, another gateway).

Each request is streamed from the upstream (``stream: true`` with ``include_usage``) by a task
that feeds the request's ``Generation``, so a local caller gets the same events, and billing
the same usage, as from the local engine. Outbound HTTP goes through the app's one
``httpx.AsyncClient``; at most ``upstream_max_concurrency`` requests are in flight (past it:
503 ``AI_OVERLOADED``). The upstream's own error text is never passed on. Draining
(SIGTERM), new requests are refused and those still streaming when the grace ends are
stopped with a 503, as the local engine does (ADR 0066).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from novaza_gateway.ai import estimate
from novaza_gateway.ai.engine import (
    Ending,
    Event,
    Failed,
    Finished,
    FinishReason,
    Generation,
    GenerationRequest,
    TextDelta,
    Usage,
)
from novaza_gateway.ai.errors import AiOverloaded, AiShuttingDown, AiTimeout, GenerationCancelled
from novaza_gateway.ai.registry import ModelInfo
from novaza_gateway.ai.schemas import ModelHealthOut
from novaza_gateway.core.errors import ApiError, UpstreamUnavailable

log = logging.getLogger("novaza.ai")


class _Stream:
    """What one upstream stream has delivered so far."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.chunks = 0  # text chunks: the completion estimate when no usage came
        self.finish_reason: FinishReason = "stop"

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens or self.chunks)


class UpstreamProvider:
    def __init__(
        self,
        info: ModelInfo,
        upstream_model: str,
        base_url: str,
        api_key: str | None,
        http: httpx.AsyncClient,
        *,
        timeout_seconds: float,
        max_concurrency: int,
    ) -> None:
        self.info = info
        self.upstream_model = upstream_model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http
        self.timeout = httpx.Timeout(timeout_seconds, connect=5.0)
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self.completed = 0
        self.tokens_generated = 0
        self.last_error: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._stopped_by: ApiError | None = None  # why the gateway cancelled its streams

    async def estimate(self, request: GenerationRequest) -> estimate.Estimate:
        return estimate.for_upstream(request.messages, request.max_tokens)

    async def prepare(self, request: GenerationRequest) -> None:
        """Nothing: the upstream enforces ``response_format`` itself."""

    def submit(
        self, request: GenerationRequest, on_end: Callable[[Ending], None] | None = None
    ) -> Generation:
        if self._closed:
            raise AiShuttingDown()
        if self.in_flight >= self.max_concurrency:
            raise AiOverloaded(self.max_concurrency)
        events: asyncio.Queue[Event] = asyncio.Queue()
        self.in_flight += 1
        task = asyncio.create_task(self._run(request, events, on_end))
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if task.cancelled():  # cancelled before it began: _run never ran to end it
                self.in_flight -= 1
                self._end(Failed(self._cancellation(), Usage(0, 0)), events, on_end)

        task.add_done_callback(done)

        def cancel() -> None:
            task.cancel()

        return Generation(events, cancel)

    async def _run(
        self,
        request: GenerationRequest,
        events: asyncio.Queue[Event],
        on_end: Callable[[Ending], None] | None,
    ) -> None:
        stream = _Stream()
        error: ApiError | None = None
        try:
            await self._relay(request, events, stream)
        except asyncio.CancelledError:
            error = self._cancellation()
        except ApiError as exc:
            error = exc
        except httpx.TimeoutException:
            error = AiTimeout("The upstream model did not answer in time.")
        except (httpx.HTTPError, ValueError) as exc:  # connection lost, malformed event
            self.last_error = type(exc).__name__
            log.warning("ai upstream failed", extra={"error": type(exc).__name__})
            error = UpstreamUnavailable("The upstream model failed.", status=502)
        finally:
            self.in_flight -= 1
        self.completed += 1
        usage = stream.usage()
        self.tokens_generated += usage.completion_tokens
        ending: Ending = (
            Finished(stream.finish_reason, usage) if error is None else Failed(error, usage)
        )
        self._end(ending, events, on_end)

    @staticmethod
    def _end(
        ending: Ending, events: asyncio.Queue[Event], on_end: Callable[[Ending], None] | None
    ) -> None:
        events.put_nowait(ending)
        if on_end is not None:
            try:
                on_end(ending)
            except Exception as exc:  # no traceback: it may carry request data
                log.error("ai generation end callback failed", extra={"error": type(exc).__name__})

    async def _relay(
        self, request: GenerationRequest, events: asyncio.Queue[Event], stream: _Stream
    ) -> None:
        body = self._body(request)
        async with self.http.stream(
            "POST", self.url, json=body, headers=self.headers, timeout=self.timeout
        ) as response:
            if response.status_code != 200:
                await response.aread()
                self.last_error = f"upstream answered {response.status_code}"
                status = 503 if response.status_code in (429, 503) else 502
                raise UpstreamUnavailable("The upstream model refused the request.", status=status)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                self._take(orjson.loads(data), events, stream)
        self.last_error = None

    def _take(self, chunk: Any, events: asyncio.Queue[Event], stream: _Stream) -> None:
        if not isinstance(chunk, dict):
            raise ValueError("not a chunk")
        if chunk.get("error"):
            raise UpstreamUnavailable("The upstream model failed midway.", status=502)
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                stream.chunks += 1
                events.put_nowait(TextDelta(str(content)))
            if choice.get("finish_reason") == "length":
                stream.finish_reason = "length"
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            stream.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            stream.completion_tokens = int(usage.get("completion_tokens") or 0)

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        if request.ignore_eos:
            body["ignore_eos"] = True
        if request.output is not None:  # as the client sent it
            body["response_format"] = dict(request.output.wire)
        return body

    def health(self) -> ModelHealthOut:
        return ModelHealthOut(
            id=self.info.id,
            provider="openai-compatible",
            state="ready",
            queue_depth=0,
            queue_capacity=self.max_concurrency,
            in_flight=self.in_flight,
            completed=self.completed,
            tokens_generated=self.tokens_generated,
            error=self.last_error,
        )

    def start(self) -> None:
        pass

    def drain(self, ends_in: float) -> None:
        """Refuse new requests; stop the streams still running ``ends_in`` seconds from now."""
        self._closed = True
        asyncio.get_running_loop().call_later(ends_in, self._stop_all)

    def _stop_all(self) -> None:
        self._stopped_by = AiShuttingDown("The gateway stopped the generation to shut down.")
        for task in list(self._tasks):
            task.cancel()

    def _cancellation(self) -> ApiError:
        return self._stopped_by or GenerationCancelled()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def upstream_info(model_id: str, context_tokens: int) -> ModelInfo:
    return ModelInfo(model_id, "novaza-upstream", int(time.time()), context_tokens)
