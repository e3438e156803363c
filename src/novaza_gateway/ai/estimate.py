"""What a request may cost at most, in tokens, before it runs: its prompt and its generation cap.

The local model counts the prompt exactly, with its own chat template and tokenizer, once it
is loaded. Otherwise (the model not loaded yet, an upstream model whose tokenizer the gateway
does not have) the prompt is bounded from above: a byte-level tokenizer (BPE, SentencePiece
with byte fallback) never makes more tokens than the text has UTF-8 bytes, plus the template's
own text. The estimate errs high, so a request never consumes more than it reserved; the
reservation is trued up to the tokens actually counted when the request ends (ADR 0041).

Pure: no model, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from novaza_gateway.ai.engine import ChatMessage

TEMPLATE_TOKENS = 64  # a chat template's own text: a default system prompt, the answer's opening
MESSAGE_TOKENS = 8  # each message's role markers and separators


@dataclass(frozen=True, slots=True)
class Estimate:
    """At most ``prompt_tokens`` read and ``completion_tokens`` generated."""

    prompt_tokens: int
    completion_tokens: int
    exact: bool  # the prompt was counted by the model's tokenizer

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def prompt_bound(messages: Iterable[ChatMessage]) -> int:
    """An upper bound of the prompt's tokens without the tokenizer: UTF-8 bytes plus markup."""
    return TEMPLATE_TOKENS + sum(MESSAGE_TOKENS + len(m.content.encode()) for m in messages)


def for_local(
    messages: tuple[ChatMessage, ...], counted: int | None, max_tokens: int, context: int
) -> Estimate:
    """A model run here stops at its context window, so prompt plus answer never pass it; a
    prompt that does not fit fails before anything is counted."""
    prompt = counted if counted is not None else min(prompt_bound(messages), context - 1)
    return Estimate(prompt, max(min(max_tokens, context - prompt), 0), counted is not None)


def for_upstream(messages: tuple[ChatMessage, ...], max_tokens: int) -> Estimate:
    """An upstream's context window is its own: only ``max_tokens`` bounds the answer."""
    return Estimate(prompt_bound(messages), max_tokens, False)
