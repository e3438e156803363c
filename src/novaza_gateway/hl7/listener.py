"""The MLLP listener: asyncio TCP server, many messages per connection, one ACK each.

The tenant of a message comes from the tenants' ``hl7.mllpRoutes`` (MSH-5/6, MSH-4); an
unrouted message, a suspended tenant or one without the ``hl7_fhir`` add-on gets AR. Routed
messages go to the ``IntakeBatcher`` (group commit); the ACK is written only after the
message's transaction committed. A connection may pipeline: the next frames are read and
queued while earlier ones are processed, and the ACKs go back in the order of the frames.
If the store fails, the connection is closed without an ACK, so the sender resends.

Each connection is an ``asyncio.Protocol`` (ADR 0015): frames are taken as the bytes
arrive and each ACK is written from its outcome's callback, with no task, stream or
``asyncio.wait`` per message. A frame whose tenant is not cached yet waits in a short-lived
task, and the connection's later frames queue behind it, so the order holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

from novaza_gateway.config import Hl7Config
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.tenancy import TenantCache, TenantContext
from novaza_gateway.hl7 import intake, metrics
from novaza_gateway.hl7.ack import ack_wanted
from novaza_gateway.hl7.batcher import IntakeBatcher
from novaza_gateway.hl7.intake import Received
from novaza_gateway.hl7.mllp import FrameTooLarge, MllpDecoder, frame
from novaza_gateway.hl7.outcome import Outcome, reject
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    UNKNOWN_KEY_IDENTIFIER,
    Message,
    ParseError,
)
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.routing import Route, TenantHl7Settings

log = logging.getLogger("novaza.hl7.mllp")
ADDON = "hl7_fhir"
PIPELINE = 64  # frames read ahead of their ACKs, per connection

# A frame as taken: to store, answered at once, or parsed with its tenant still to load.
Taken = Received | Outcome | Message


@dataclass(slots=True)
class _Pending:
    """A frame read, waiting for its outcome; ``always``: answered even if MSH-15 says not."""

    started: float
    outcome: asyncio.Future[Outcome]
    always: bool


class MllpListener:
    def __init__(
        self,
        config: Hl7Config,
        settings: TenantHl7Settings,
        tenants: TenantCache,
        batcher: IntakeBatcher,
    ) -> None:
        self.config = config
        self.settings = settings
        self.tenants = tenants
        self.port: int | None = None
        self.batcher = batcher  # the area's, shared with HTTP intake; started and stopped there
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        # reuse_port: with ``novaza serve --workers N`` every worker listens on the one port
        # and the kernel spreads the connections over them (a connection stays with one).
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self),
            self.config.mllp_host,
            self.config.mllp_port or 0,
            reuse_port=bool(self.config.mllp_port),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mllp listening", extra={"port": self.port})

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        await self._server.wait_closed()
        self._server = None

    def take_now(self, payload: bytes) -> Taken:
        """A routed message to store, the AR for one that is not taken, or the parsed
        message when its routing or tenant must be loaded first (``take_later``)."""
        try:
            message = intake.take(payload, intake.ANY, self.config)
        except ParseError as exc:
            return reject(payload, exc)
        header = message.header
        known, route = self.settings.route_now(
            header.receiving_application, header.receiving_facility, header.sending_facility
        )
        tenant = None
        if known and route is not None:
            known, tenant = self.tenants.peek(route.tenant_id)
        if not known:
            return message
        return self._admit(payload, message, route, tenant)

    async def take_later(self, payload: bytes, message: Message) -> Received | Outcome:
        header = message.header
        route = await self.settings.route(
            header.receiving_application, header.receiving_facility, header.sending_facility
        )
        tenant = await self.tenants.get(route.tenant_id) if route else None
        return self._admit(payload, message, route, tenant)

    def _admit(
        self, payload: bytes, message: Message, route: Route | None, tenant: TenantContext | None
    ) -> Received | Outcome:
        header = message.header
        if route is None or tenant is None or tenant.status != "active":
            refusal = ParseError(
                "No tenant receives messages for this receiving application/facility.",
                code=UNKNOWN_KEY_IDENTIFIER,
            )
            return reject(payload, refusal, header)
        if ADDON not in tenant.addons:
            refusal = ParseError(
                "The tenant's subscription does not include HL7 messaging.",
                code=APPLICATION_INTERNAL_ERROR,
            )
            return reject(payload, refusal, header)
        actor = Actor(f"mllp:{header.sending_application}"[:255], tenant.id)
        return Received(Hl7Context(tenant.id, actor, route.settings), payload, message, "mllp")


class _Connection(asyncio.Protocol):
    """One MLLP connection: frames in as they arrive, ACKs out in frame order."""

    def __init__(self, listener: MllpListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._decoder = MllpDecoder(listener.config.max_frame_bytes)
        self._pending: deque[_Pending] = deque()  # handed over, in frame order
        self._waiting: deque[tuple[float, bytes, Taken]] = deque()  # behind a tenant load
        self._loading: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._ended = False  # no more frames are read: EOF, a frame too large, a drop
        self._reading_paused = False
        self._writing_paused = False
        self._active = self._loop.time()
        self._idle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._listener._connections.add(self)
        self._idle = self._loop.call_later(self._idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._active = self._loop.time()
        try:
            self._frames(data)
        except Exception as exc:  # never a traceback: it could carry message data
            self._fail(exc)

    def eof_received(self) -> bool:
        self._ended = True
        return self._outstanding  # keep the socket open for the ACKs still owed

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._flow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._ended = True
        self._forget()
        self._listener._connections.discard(self)

    # -- frames in
    def _frames(self, data: bytes) -> None:
        started = time.perf_counter()
        try:
            payloads, too_large = self._decoder.feed(data), None
        except FrameTooLarge as exc:
            payloads, too_large = exc.frames, exc
        for payload in payloads:
            if self._waiting:  # its turn comes after the frames waiting for a tenant
                self._waiting.append((started, payload, self._listener.take_now(payload)))
            else:
                self._take(started, payload, self._listener.take_now(payload))
        if too_large is not None:  # answered AR after the frames before it; then no more
            limit = self._listener.config.max_frame_bytes
            error = ParseError(f"The frame is larger than {limit} bytes.")
            self._take(started, b"", reject(b"", error))
            self._end_reading()
        self._flow()

    def _take(self, started: float, payload: bytes, taken: Taken) -> None:
        if self._waiting or isinstance(taken, Message):
            self._waiting.append((started, payload, taken))
            if self._loading is None:
                self._loading = self._loop.create_task(self._load(), name="mllp-tenant")
            return
        self._hand_over(started, taken)

    async def _load(self) -> None:
        """Take the waiting frames in order, loading routing and tenants as needed."""
        try:
            while self._waiting:
                started, payload, taken = self._waiting[0]
                if isinstance(taken, Message):
                    taken = await self._listener.take_later(payload, taken)
                self._waiting.popleft()
                self._hand_over(started, taken)
                self._flow()
        except Exception as exc:
            self._fail(exc)
        finally:
            self._loading = None

    def _hand_over(self, started: float, taken: Received | Outcome) -> None:
        if isinstance(taken, Outcome):
            entry = _Pending(started, _done(taken), True)
        else:
            try:
                entry = _Pending(started, self._listener.batcher.submit(taken), False)
            except RuntimeError:  # shutting down: no ACK, the sender resends
                self._drop()
                return
        self._pending.append(entry)
        entry.outcome.add_done_callback(self._ready)

    # -- ACKs out
    def _ready(self, _: asyncio.Future[Outcome]) -> None:
        try:
            self._answer()
        except Exception as exc:
            self._fail(exc)

    def _answer(self) -> None:
        """Write the ACKs that are ready, in order; a store failure drops the connection."""
        if self._transport is None:
            return
        acks: list[bytes] = []
        while self._pending and self._pending[0].outcome.done():
            entry = self._pending[0]
            if entry.outcome.cancelled() or entry.outcome.exception() is not None:
                break
            self._pending.popleft()
            outcome = entry.outcome.result()
            wanted = entry.always or ack_wanted(outcome.header, outcome.ack.code)
            metrics.count("mllp", outcome, acked=wanted)
            if wanted:
                metrics.ack_latency(time.perf_counter() - entry.started)
                acks.append(frame(outcome.ack.data))
        if acks:
            self._transport.write(b"".join(acks))
            self._active = self._loop.time()
        if self._pending and self._pending[0].outcome.done():  # failed: no ACK, resend
            self._drop()
        elif self._ended and not self._outstanding:
            self._transport.close()
        else:
            self._flow()

    # -- flow, idleness, endings
    @property
    def _outstanding(self) -> bool:
        return bool(self._pending or self._waiting)

    @property
    def _idle_timeout(self) -> float:
        return self._listener.config.idle_timeout_seconds

    def _flow(self) -> None:
        """Read ahead at most ``PIPELINE`` frames, and not while the peer reads no ACKs."""
        if self._transport is None or self._ended:
            return
        pause = self._writing_paused or len(self._pending) + len(self._waiting) >= PIPELINE
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _end_reading(self) -> None:
        self._ended = True
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _check_idle(self) -> None:
        """Closes a connection with nothing in flight for ``idle_timeout`` seconds. One timer
        per idle period, not one per message: it re-arms for what is left."""
        if self._transport is None:
            return
        left = self._active + self._idle_timeout - self._loop.time()
        if self._outstanding:
            self._idle = self._loop.call_later(self._idle_timeout, self._check_idle)
        elif left > 0:
            self._idle = self._loop.call_later(left, self._check_idle)
        else:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        log.error("mllp connection failed", extra={"error": type(exc).__name__})
        self._drop()

    def _drop(self) -> None:
        """Close without another ACK (the ACKs already written still go out)."""
        self._end_reading()
        self._forget()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._ended = True
        self._forget()
        if self._transport is not None:
            self._transport.abort()

    def _forget(self) -> None:
        """Frames not yet in a group are never processed; the others are answered by the
        sender's resend. Failed outcomes are read so asyncio does not log them."""
        for entry in self._pending:
            if entry.outcome.done():
                if not entry.outcome.cancelled():
                    entry.outcome.exception()
            else:
                entry.outcome.cancel()
        self._pending.clear()
        self._waiting.clear()
        if self._loading is not None:
            self._loading.cancel()
        if self._idle is not None:
            self._idle.cancel()


def _done(outcome: Outcome) -> asyncio.Future[Outcome]:
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future
