"""The inference engine: one model instance, one worker thread, a bounded queue.

A llama.cpp context is not thread safe and a CPU runs one generation at a time well, so each
local model gets one worker thread that takes requests from a bounded queue (the waiting
line; past its capacity callers get 503 ``AI_OVERLOADED`` at once instead of waiting for a
timeout). Events cross from the worker to the event loop with ``call_soon_threadsafe`` into
an ``asyncio.Queue``: the loop never blocks on the model. Between two tokens the worker
checks the request's cancel flag (the client went away) and deadline (``AI_TIMEOUT``).

On SIGTERM the engine drains: queued requests are refused at once (503), and the one still
generating when the grace ends is stopped like a cancelled one but ends with that 503, so a
stream gets its error event before the server cuts connections (ADR 0066).

Whatever the ending (done, cancelled, timed out, failed) the worker reports how many tokens
were read and generated, and the engine hands that to the request's ``on_end`` callback on
the loop: usage is metered even when nobody is listening any more.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from novaza_gateway.ai.errors import (
    AiOverloaded,
    AiShuttingDown,
    AiTimeout,
    ContextLengthExceeded,
    GenerationCancelled,
    ModelUnavailable,
)
from novaza_gateway.core.errors import ApiError, Internal

log = logging.getLogger("novaza.ai")

FinishReason = Literal["stop", "length"]
EngineState = Literal["not_loaded", "loading", "ready", "failed", "stopped"]


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What the answer must be: OpenAI's ``response_format`` (docs/ai.md, ADR 0042).

    ``schema`` is the JSON schema as JSON text (``json_schema`` only), the key a grammar is
    cached under; ``wire`` is the ``response_format`` as the client sent it, which an
    OpenAI-compatible upstream receives unchanged."""

    type: Literal["text", "json_object", "json_schema"]
    schema: str | None = None
    wire: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def constrained(self) -> bool:
        return self.type != "text"

    @property
    def key(self) -> str:
        return self.schema if self.schema is not None else self.type


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens (benchmarks)
    output: OutputFormat | None = None  # None: free text


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class Failed:
    error: ApiError
    usage: Usage


Event = TextDelta | Finished | Failed
Ending = Finished | Failed


class ModelRun(Protocol):
    """One generation on the worker thread: text pieces (possibly empty), one per token."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class LocalModel(Protocol):
    """A model run in-process; every method is called on the engine's worker thread only."""

    def load(self) -> None: ...

    def start(self, request: GenerationRequest) -> ModelRun:
        """Tokenize and check the prompt; raises ``ContextLengthExceeded``."""

    def count_prompt(self, messages: tuple[ChatMessage, ...]) -> int | None:
        """The prompt's tokens as ``start`` counts them, callable from any thread; None when
        it cannot be counted now (not loaded)."""

    def output_ready(self, output: OutputFormat) -> bool:
        """Whether ``output`` needs no (possibly slow) preparation: cheap, on the loop."""

    def prepare_output(self, output: OutputFormat) -> None:
        """Build and check what ``output`` needs (a grammar), from any thread but the loop;
        raises ``ValidationFailed`` for a format the model cannot follow."""

    def close(self) -> None: ...


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    deadline: float
    on_end: Callable[[Ending], None] | None
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: bool = False  # an ending was emitted (worker thread)
    stopped_by: ApiError | None = None  # why the gateway stopped it; None: the caller left

    def stop(self, error: ApiError) -> None:
        """From the loop: the caller's answer ends now with ``error``; the worker stops
        between two tokens (or once a long prompt is read: on a busy CPU, seconds later) and
        its own ending, with the usage, still goes to ``on_end``."""
        self.stopped_by = error
        self.cancelled.set()
        self.events.put_nowait(Failed(error, Usage(0, 0)))

    def cancellation(self) -> ApiError:
        return self.stopped_by or GenerationCancelled()

    def emit(self, event: Event) -> None:
        """From the worker thread. A closed loop means the app is gone: stop generating."""
        if isinstance(event, (Finished, Failed)):
            self.ended = True
        try:
            self.loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:
            self.cancelled.set()

    def _deliver(self, event: Event) -> None:  # on the loop
        self.events.put_nowait(event)
        if self.on_end is not None and isinstance(event, (Finished, Failed)):
            try:
                self.on_end(event)
            except Exception as exc:  # no traceback: it may carry request data
                log.error("ai generation end callback failed", extra={"error": type(exc).__name__})


class Generation:
    """The caller's handle on a submitted request: its events, and a way to stop it.

    Any provider makes one: ``events`` is fed by the producer (the engine's worker thread
    through the loop, an upstream stream's task), ``cancel`` tells the producer to stop."""

    def __init__(self, events: asyncio.Queue[Event], cancel: Callable[[], None]) -> None:
        self._events = events
        self._cancel = cancel

    async def events(self) -> AsyncGenerator[Event, None]:
        """Text deltas, then one ``Finished`` or ``Failed``. Leaving early cancels."""
        try:
            while True:
                event = await self._events.get()
                yield event
                if not isinstance(event, TextDelta):
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._cancel()


class InferenceEngine:
    """Serves one ``LocalModel``: loads it once, runs one generation at a time."""

    def __init__(
        self, model: LocalModel, *, queue_size: int, timeout_seconds: float, name: str
    ) -> None:
        self.model = model
        self.name = name
        self.queue_size = queue_size
        self.timeout_seconds = timeout_seconds
        self.state: EngineState = "not_loaded"
        self.last_error: str | None = None
        self.load_seconds: float | None = None
        self.completed = 0
        self.tokens_generated = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._running: _Job | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ loop side

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def in_flight(self) -> int:
        return 1 if self._running is not None else 0

    def start(self, preload: bool = False) -> None:
        """Start the worker (and load the model in it, when ``preload``); idempotent."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._work, args=(preload,), name=f"ai-{self.name}", daemon=True
                )
                self._thread.start()

    def submit(
        self, request: GenerationRequest, on_end: Callable[[Ending], None] | None = None
    ) -> Generation:
        """Queue a request (never waits); 503 when the waiting line is full or closed."""
        if self._closed:
            raise AiShuttingDown()
        self.start()
        job = _Job(
            request, asyncio.get_running_loop(), time.monotonic() + self.timeout_seconds, on_end
        )
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise AiOverloaded(self.queue_size) from None
        return Generation(job.events, job.cancelled.set)

    def drain(self, ends_in: float) -> None:
        """Shutting down: refuse new and waiting requests (503); stop the running one with
        ``AiShuttingDown`` if it still runs ``ends_in`` seconds from now."""
        self._closed = True
        self._refuse_waiting(AiShuttingDown())
        asyncio.get_running_loop().call_later(ends_in, self._stop_running)

    def _stop_running(self) -> None:
        running = self._running
        if running is not None:
            running.stop(AiShuttingDown("The gateway stopped the generation to shut down."))

    def _refuse_waiting(self, error: ApiError) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.emit(Failed(error, Usage(0, 0)))

    async def stop(self) -> None:
        """Refuse new requests, end the waiting and running ones, stop the worker."""
        self._closed = True
        running = self._running
        if running is not None:
            running.cancelled.set()
        self._refuse_waiting(ModelUnavailable("The AI engine stopped."))
        thread = self._thread
        if thread is None:
            self.state = "stopped"
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join, 30.0)
        self.state = "stopped"

    # ------------------------------------------------------------------ worker thread

    def _work(self, preload: bool) -> None:
        if preload:
            self._ensure_loaded()
        while True:
            job = self._queue.get()
            if job is None:
                break
            self._running = job
            try:
                self._serve(job)
            except Exception as exc:  # never the prompt in a log line: PHI
                log.error("ai generation failed unexpectedly", extra={"error": type(exc).__name__})
            finally:
                self._running = None
                if not job.ended:  # every job ends once: its usage metered, its tokens released
                    job.emit(Failed(Internal(), Usage(0, 0)))
        try:
            self.model.close()
        except Exception:
            log.exception("ai model close failed")

    def _ensure_loaded(self) -> bool:
        if self.state == "ready":
            return True
        self.state = "loading"
        begin = time.perf_counter()
        try:
            self.model.load()
        except Exception as exc:
            self.state, self.last_error = "failed", f"{type(exc).__name__}: {exc}"[:300]
            log.error(
                "ai model failed to load", extra={"model": self.name, "error": self.last_error}
            )
            return False
        self.load_seconds = time.perf_counter() - begin
        self.state, self.last_error = "ready", None
        log.info("ai model loaded", extra={"model": self.name, "seconds": self.load_seconds})
        return True

    def _serve(self, job: _Job) -> None:
        if job.cancelled.is_set():
            job.emit(Failed(job.cancellation(), Usage(0, 0)))
            return
        if time.monotonic() >= job.deadline:
            job.emit(Failed(AiTimeout("The request waited past the timeout."), Usage(0, 0)))
            return
        if not self._ensure_loaded():
            job.emit(Failed(ModelUnavailable(), Usage(0, 0)))
            return
        try:
            run = self.model.start(job.request)
        except ContextLengthExceeded as exc:
            job.emit(Failed(exc, Usage(0, 0)))
            return
        except Exception as exc:  # never the prompt in a log line: PHI
            log.error("ai generation failed to start", extra={"error": type(exc).__name__})
            job.emit(Failed(Internal(), Usage(0, 0)))
            return
        job.emit(self._generate(job, run))

    def _generate(self, job: _Job, run: ModelRun) -> Ending:
        error: ApiError | None = None
        try:
            for piece in run:
                if job.cancelled.is_set():
                    error = job.cancellation()
                    break
                if time.monotonic() >= job.deadline:
                    error = AiTimeout()
                    break
                if piece:
                    job.emit(TextDelta(piece))
        except Exception as exc:
            log.error("ai generation failed", extra={"error": type(exc).__name__})
            error = Internal()
        finally:
            run.close()
        usage = Usage(run.prompt_tokens, run.completion_tokens)
        self.completed += 1
        self.tokens_generated += run.completion_tokens
        if error is not None:
            return Failed(error, usage)
        return Finished(run.finish_reason, usage)
