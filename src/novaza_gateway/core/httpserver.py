"""``LimitedHttpProtocol``: uvicorn's httptools protocol with limits on what a connection holds.

uvicorn bounds none of these: a client may send headers forever, a byte at a time, and hold
its connection (and a file descriptor) for as long as it likes; 2,000 such connections
starved a process of descriptors. Here, per connection:

- the request head (request line and headers) within ``max_header_bytes`` and ``max_headers``
  fields, else 431 ``HEADERS_TOO_LARGE``;
- a complete head within ``header_timeout_seconds`` of the connection opening or of the
  previous response, else 408 ``REQUEST_TIMEOUT`` (a connection that sent nothing of a next
  request is closed silently, as uvicorn's keep-alive timeout does);
- no pause longer than ``body_timeout_seconds`` in a request body, else 408 (or a bare close
  once the response has started): a large upload that keeps arriving is never cut off;
- at most ``max_connections`` open per process: the next one is answered 503 ``SERVER_BUSY``
  with ``Retry-After: 1`` as soon as it is accepted.

Every refusal is the error envelope with ``Connection: close``, and the connection closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import resource
from typing import Any, cast

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from novaza_gateway.config import EdgeLimits
from novaza_gateway.core.errors import ApiError, HeadersTooLarge, RequestTimeout, ServerBusy
from novaza_gateway.core.metrics import HTTP_EDGE_REFUSALS

log = logging.getLogger("novaza.edge")
RESERVED_DESCRIPTORS = 128  # database and Redis pools, log files, upstream clients, the archive
_REFUSALS = {
    reason: HTTP_EDGE_REFUSALS.labels(reason=reason)
    for reason in ("header_bytes", "header_count", "header_timeout", "body_timeout", "busy")
}


class LimitedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._awaiting_head = True  # bytes now are a request head (or nothing yet)
        self._head_bytes = 0
        self._header_count = 0
        self._head_size = 0  # of the head httptools parsed so far
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0
        self._refused = False

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(ServerBusy(headers={"Retry-After": "1"}), "busy")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Counted as they arrive too: httptools reports a header only once it is complete.
        if (
            self._awaiting_head
            and not self._refused
            and self._head_bytes > self.limits.max_header_bytes
        ):
            self._refuse(HeadersTooLarge(details=self._head_limits()), "header_bytes")

    # -- parser callbacks

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._header_count = 0
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            self._head_size += len(url)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refuse(HeadersTooLarge(details=self._head_limits()), "header_count")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self._head_size > self.limits.max_header_bytes:  # a whole head in one read
            self._refuse(HeadersTooLarge(details=self._head_limits()), "header_bytes")
            return
        self._awaiting_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        self._body_seen_at = self.loop.time()
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds, self._body_timeout
        )

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_seen_at = self.loop.time()  # the timer checks progress when it fires
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._awaiting_head = True
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:  # answered before the body
            self._arm_head_timer()  # ended (a 401, a 413): the next head is timed from here

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head, from this response on

    # -- timers

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_timeout
        )

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing() or not self._awaiting_head:
            return
        if self._head_bytes == 0:  # idle, not slow: nothing to answer
            self.transport.close()
            return
        self._refuse(RequestTimeout("The request head was not received in time."), "header_timeout")

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._refused or self.transport.is_closing() or self._awaiting_head:
            return
        quiet = self.loop.time() - self._body_seen_at
        if quiet < self.limits.body_timeout_seconds:  # it moved since: wait the rest
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_seconds - quiet, self._body_timeout
            )
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            _REFUSALS["body_timeout"].inc()
            log.info("request refused at the edge", extra=self._fields(408, "body_timeout"))
            self._refused = True
            self.transport.close()
            return
        self._refuse(RequestTimeout("The request body was not received in time."), "body_timeout")

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # -- refusal

    def _refuse(self, error: ApiError, reason: str) -> None:
        """The envelope, ``Connection: close``, and the connection closes; the app (if one
        runs for this request) sees a disconnect and its answer goes nowhere."""
        self._refused = True
        self._cancel_timers()
        _REFUSALS[reason].inc()
        log.info("request refused at the edge", extra=self._fields(error.status, reason))
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        body = orjson.dumps(error.body())
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        for key, text in error.headers.items():
            head += [key.lower().encode(), b": ", text.encode(), b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
        if not self.transport.is_closing():
            self.transport.write(b"".join(head))
            self.transport.close()

    def _head_limits(self) -> dict[str, int]:
        return {"maxBytes": self.limits.max_header_bytes, "maxHeaders": self.limits.max_headers}

    def _fields(self, status: int, reason: str) -> dict[str, Any]:
        return {
            "status": status,
            "reason": reason,
            "client": self.client[0] if self.client else None,
        }


def protocol_factory(limits: EdgeLimits) -> type[asyncio.Protocol]:
    """What ``uvicorn.run(http=...)`` takes: it calls this as it would the class. A partial
    of an importable class pickles, so ``--workers`` processes receive it too."""
    limits = within_descriptors(limits)
    return cast(type[asyncio.Protocol], functools.partial(LimitedHttpProtocol, limits=limits))


def within_descriptors(limits: EdgeLimits) -> EdgeLimits:
    """The connection cap below the process's descriptor limit, less what the pools, logs
    and upstreams hold: past the limit ``accept`` fails and new clients wait unanswered
    instead of getting 503 (1,500 slow connections at 1,024 descriptors: docs/security.md)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or limits.max_connections <= soft - RESERVED_DESCRIPTORS:
        return limits
    cap = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "connection cap lowered to fit the descriptor limit",
        extra={"maxConnections": cap, "descriptorLimit": soft},
    )
    return dataclasses.replace(limits, max_connections=cap)
