"""OpenAI Chat Completions over a ``Generation``: the request mapping, the answer, the stream.

The chunks follow OpenAI's stream: a first chunk with the assistant role, one per text delta,
a last one with ``finish_reason``, then (``stream_options.include_usage``) one with empty
``choices`` and the usage, then ``[DONE]``. A generation that fails midway ends the stream
with an ``{"error": ...}`` event, which the OpenAI SDKs raise as an API error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from novaza_gateway.ai.engine import (
    ChatMessage,
    Failed,
    Finished,
    Generation,
    GenerationRequest,
    Role,
    TextDelta,
    Usage,
)
from novaza_gateway.ai.schemas import ChatCompletionIn
from novaza_gateway.ai.sse import DONE, event
from novaza_gateway.core.errors import ApiError
from novaza_gateway.core.ids import new_id

ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def new_completion_id() -> str:
    return f"chatcmpl-{new_id()}"


def to_request(body: ChatCompletionIn, default_max_tokens: int) -> GenerationRequest:
    messages = tuple(ChatMessage(ROLES[m.role], m.text()) for m in body.messages)
    return GenerationRequest(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stops(),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        output=body.output_format(),
    )


@dataclass(frozen=True, slots=True)
class Result:
    text: str
    finished: Finished


@dataclass(frozen=True, slots=True)
class Completed:
    completion_id: str
    result: Result


async def collect(generation: Generation) -> Result:
    """The whole answer; raises the generation's error (usage was metered all the same)."""
    pieces: list[str] = []
    async with contextlib.aclosing(generation.events()) as events:
        async for item in events:
            if isinstance(item, TextDelta):
                pieces.append(item.text)
            elif isinstance(item, Failed):
                raise item.error
            else:
                return Result("".join(pieces), item)
    raise RuntimeError("generation ended without an ending")


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(completion_id: str, model: str, result: Result) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text},
                    "finish_reason": result.finished.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage_body(result.finished.usage),
        }
    )


class ChunkWriter:
    def __init__(self, completion_id: str, model: str, include_usage: bool) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            body["usage"] = None
        return event(orjson.dumps(body))

    def usage(self, usage: Usage) -> bytes:
        body = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_body(usage),
        }
        return event(orjson.dumps(body))

    async def stream(self, generation: Generation) -> AsyncGenerator[bytes, None]:
        """Server-sent events; closing this iterator early cancels the generation."""
        yield self.chunk({"role": "assistant", "content": ""})
        async with contextlib.aclosing(generation.events()) as events:
            async for item in events:
                if isinstance(item, TextDelta):
                    yield self.chunk({"content": item.text})
                elif isinstance(item, Finished):
                    yield self.chunk({}, item.finish_reason)
                    if self.include_usage:
                        yield self.usage(item.usage)
                    yield DONE
                else:
                    yield self.error(item.error)

    @staticmethod
    def error(error: ApiError) -> bytes:
        body = {"error": {"code": error.code, "message": error.message, "type": "error"}}
        return event(orjson.dumps(body))
