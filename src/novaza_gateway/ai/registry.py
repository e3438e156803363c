"""Which models the gateway serves, and who serves each: the model registry.

A provider answers for one model id: it takes a ``GenerationRequest`` and hands back a
``Generation`` (text deltas, then the ending with usage). The local llama.cpp engine is one
provider; an OpenAI-compatible upstream would be another, registered the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from novaza_gateway.ai import estimate
from novaza_gateway.ai.engine import Ending, Generation, GenerationRequest, InferenceEngine
from novaza_gateway.ai.errors import ModelNotFound
from novaza_gateway.ai.schemas import ModelHealthOut


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owned_by: str
    created: int  # Unix seconds, as OpenAI's model list gives them
    context_tokens: int


# Prompts up to this many characters are tokenized on the event loop (about 0.2-0.4 ms);
# longer ones in a thread (llama.cpp releases the GIL while it tokenizes).
INLINE_TOKENIZE_CHARS = 512


class ModelProvider(Protocol):
    info: ModelInfo

    async def estimate(self, request: GenerationRequest) -> estimate.Estimate:
        """The most tokens the request can read and generate (docs/ai.md, ADR 0041)."""

    async def prepare(self, request: GenerationRequest) -> None:
        """Check what the request's answer format needs (a local model builds its grammar,
        cached); raises ``ValidationFailed`` for a format the model cannot follow."""

    def submit(
        self, request: GenerationRequest, on_end: Callable[[Ending], None] | None = None
    ) -> Generation:
        """Queue the request without waiting; raises ``AiOverloaded``/``ModelUnavailable``."""

    def health(self) -> ModelHealthOut: ...

    def start(self) -> None: ...

    def drain(self, ends_in: float) -> None:
        """Shutting down: refuse what has not started; stop what still runs in ``ends_in``
        seconds with an error the caller sees (ADR 0066)."""

    async def stop(self) -> None: ...


class LocalProvider:
    """A model run in this process by an ``InferenceEngine``."""

    def __init__(self, info: ModelInfo, engine: InferenceEngine, preload: bool) -> None:
        self.info = info
        self.engine = engine
        self.preload = preload

    async def estimate(self, request: GenerationRequest) -> estimate.Estimate:
        messages, model = request.messages, self.engine.model
        if sum(len(m.content) for m in messages) <= INLINE_TOKENIZE_CHARS:
            counted = model.count_prompt(messages)
        else:
            counted = await asyncio.to_thread(model.count_prompt, messages)
        return estimate.for_local(messages, counted, request.max_tokens, self.info.context_tokens)

    async def prepare(self, request: GenerationRequest) -> None:
        """A grammar is built once per distinct schema, in a thread (a large schema takes
        milliseconds); after that the cache answers on the loop."""
        output, model = request.output, self.engine.model
        if output is not None and not model.output_ready(output):
            await asyncio.to_thread(model.prepare_output, output)

    def submit(
        self, request: GenerationRequest, on_end: Callable[[Ending], None] | None = None
    ) -> Generation:
        return self.engine.submit(request, on_end)

    def health(self) -> ModelHealthOut:
        engine = self.engine
        return ModelHealthOut(
            id=self.info.id,
            provider="llama.cpp",
            state=engine.state,
            queue_depth=engine.queue_depth,
            queue_capacity=engine.queue_size,
            in_flight=engine.in_flight,
            completed=engine.completed,
            tokens_generated=engine.tokens_generated,
            load_seconds=round(engine.load_seconds, 3) if engine.load_seconds else None,
            error=engine.last_error,
        )

    def start(self) -> None:
        if self.preload:  # otherwise the first request starts the worker and loads the model
            self.engine.start(preload=True)

    def drain(self, ends_in: float) -> None:
        self.engine.drain(ends_in)

    async def stop(self) -> None:
        await self.engine.stop()


class ModelRegistry:
    def __init__(self) -> None:
        self._providers: dict[str, ModelProvider] = {}

    def register(self, provider: ModelProvider) -> None:
        if provider.info.id in self._providers:
            raise ValueError(f"model id {provider.info.id!r} registered twice")
        self._providers[provider.info.id] = provider

    def get(self, model_id: str) -> ModelProvider:
        provider = self._providers.get(model_id)
        if provider is None:
            raise ModelNotFound(model_id)
        return provider

    def providers(self) -> list[ModelProvider]:
        return list(self._providers.values())

    async def start(self) -> None:
        for provider in self._providers.values():
            provider.start()

    def drain(self, ends_in: float) -> None:
        for provider in self._providers.values():
            provider.drain(ends_in)

    async def stop(self) -> None:
        for provider in self._providers.values():
            await provider.stop()
