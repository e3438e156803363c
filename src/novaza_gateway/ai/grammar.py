"""Grammars that constrain llama.cpp's sampling to an answer format (ADR 0042).

``json_object`` is llama.cpp's JSON grammar (one object, whitespace bounded); ``json_schema``
is the schema turned into GBNF by llama-cpp-python's converter (``json_schema_to_gbnf``, the
port of llama.cpp's ``json-schema-to-grammar``). A grammar is checked once, when it is built,
by letting llama.cpp parse it (``llama_sampler_init_grammar``, then freed): a GBNF llama.cpp
refuses would otherwise reach the sampler chain as a null sampler and crash the process.

The cache keeps grammars (and refusals) by the schema's JSON text, least recently used
first out; building may take milliseconds for large schemas, so callers on the event loop
look up with ``get`` and build with ``build`` in a thread. llama-cpp-python still parses the
GBNF text into a fresh sampler for every generation (``Llama.generate``): about 30 us for
small grammars, and it is what keeps a grammar's state per request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from novaza_gateway.ai.engine import OutputFormat
from novaza_gateway.core.errors import ValidationFailed

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

SCHEMA_PATH = "response_format.json_schema.schema"
MAX_GBNF_CHARS = 256 * 1024


class GrammarCache:
    def __init__(self, capacity: int = 128) -> None:
        self.capacity = capacity
        self.builds = 0  # grammars built (refusals included)
        self.hits = 0
        self.build_seconds = 0.0  # the total, for health and benchmarks
        self._entries: OrderedDict[str, LlamaGrammar | ValidationFailed] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, output: OutputFormat) -> LlamaGrammar | None:
        """The cached grammar (raises the cached refusal); None when not built yet."""
        with self._lock:
            entry = self._entries.get(output.key)
            if entry is None:
                return None
            self._entries.move_to_end(output.key)
            self.hits += 1
        if isinstance(entry, ValidationFailed):
            raise ValidationFailed(entry.message, details=entry.details)
        return entry

    def build(self, output: OutputFormat) -> LlamaGrammar:
        """The grammar, built now unless cached; raises ``ValidationFailed``. Not on the loop."""
        cached = self.get(output)
        if cached is not None:
            return cached
        begin = time.perf_counter()
        try:
            entry: LlamaGrammar | ValidationFailed = compile_grammar(output)
        except ValidationFailed as refused:
            entry = refused
        with self._lock:
            self.builds += 1
            self.build_seconds += time.perf_counter() - begin
            self._entries[output.key] = entry
            self._entries.move_to_end(output.key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        if isinstance(entry, ValidationFailed):
            raise ValidationFailed(entry.message, details=entry.details)
        return entry


def compile_grammar(output: OutputFormat) -> LlamaGrammar:
    """The GBNF for ``output``, checked by llama.cpp's own parser."""
    from llama_cpp import llama_cpp as native
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

    if output.schema is None:
        gbnf = JSON_GBNF
    else:
        try:
            gbnf = json_schema_to_gbnf(output.schema)
        except Exception as exc:  # the converter asserts on what it does not support
            reason = str(exc).split(":", 1)[0][:200] or type(exc).__name__
            raise ValidationFailed.field(
                SCHEMA_PATH, f"llama.cpp cannot follow it: {reason}"
            ) from None
    if len(gbnf) > MAX_GBNF_CHARS:
        raise ValidationFailed.field(SCHEMA_PATH, "the schema is too large to follow")
    # No vocabulary: parsing needs none (token references aside, which the converter never
    # writes), so a grammar is checked without the model loaded.
    sampler = native.llama_sampler_init_grammar(None, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise ValidationFailed.field(SCHEMA_PATH, "llama.cpp cannot compile its grammar")
    native.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(gbnf, verbose=False)
