"""Proxy mode's body handling: the request body off the ASGI channel, small answers read
whole (with a cap), large ones relayed chunk by chunk, URL rewriting on the way."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from novaza_gateway.imaging.errors import UpstreamUnavailable
from novaza_gateway.imaging.proxy_merges import PatientIdCoercer
from novaza_gateway.imaging.proxy_rewrite import StreamRewriter

log = logging.getLogger("novaza.imaging.proxy")

SMALL_ANSWER_BYTES = 64 * 1024 * 1024  # a QIDO page or a STOW response, read whole


async def receive_body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives on the ASGI channel, never held whole."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read_small(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > SMALL_ANSWER_BYTES:
            raise UpstreamUnavailable(
                "The imaging archive's answer is larger than the gateway accepts.",
                reason="answer_too_large",
            )
    return bytes(body)


async def guarded(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Upstream bytes to the caller. When the upstream breaks mid-answer the status is
    already sent: the caller's connection is cut, so a truncated body is never mistaken
    for a whole one (logged by name only; no body, no trace to the caller)."""
    try:
        async for chunk in chunks:
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("imaging upstream broke mid-answer", extra={"error": type(exc).__name__})
        raise ConnectionError("imaging upstream broke mid-answer") from None


async def rewritten(chunks: AsyncIterator[bytes], rewriter: StreamRewriter) -> AsyncIterator[bytes]:
    async for chunk in guarded(chunks):
        out = rewriter.feed(chunk)
        if out:
            yield out
    tail = rewriter.flush()
    if tail:
        yield tail


async def coerced_stream(
    chunks: AsyncIterator[bytes], coercer: PatientIdCoercer
) -> AsyncIterator[bytes]:
    """WADO metadata with a merged patient's (0010,0020) coerced as it passes (ADT A40)."""
    async for chunk in chunks:
        out = coercer.feed(chunk)
        if out:
            yield out
    tail = coercer.flush()
    if tail:
        yield tail


def json_any(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(
            "The imaging archive answered with malformed JSON.", reason="malformed_answer"
        ) from None


def json_list(body: bytes) -> list[Any]:
    found = json_any(body)
    if found is None:
        return []
    if not isinstance(found, list):
        raise UpstreamUnavailable(
            "The imaging archive answered a search with something else than a list.",
            reason="malformed_answer",
        )
    return found
