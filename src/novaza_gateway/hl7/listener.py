"""The MLLP listener: asyncio TCP server, many messages per connection, one ACK each.

The tenant of a message comes from the tenants' ``hl7.mllpRoutes`` (MSH-5/6, MSH-4); an
unrouted message, a suspended tenant or one without the ``hl7_fhir`` add-on gets AR. Routed
messages go to the ``IntakeBatcher`` (group commit); the ACK is written only after the
message's transaction committed. A connection may pipeline: the next frames are read and
queued while earlier ones are processed, and the ACKs go back in the order of the frames.
If the store fails, the connection is closed without an ACK, so the sender resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from novaza_gateway.config import Hl7Config
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import Database
from novaza_gateway.core.metering import UsageRecorder
from novaza_gateway.core.tenancy import TenantCache
from novaza_gateway.hl7 import intake, metrics
from novaza_gateway.hl7.ack import ack_wanted
from novaza_gateway.hl7.batcher import IntakeBatcher
from novaza_gateway.hl7.intake import Received
from novaza_gateway.hl7.metrics import MLLP_ACK_SECONDS
from novaza_gateway.hl7.mllp import FrameTooLarge, MllpDecoder, frame
from novaza_gateway.hl7.outcome import Outcome, reject
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    UNKNOWN_KEY_IDENTIFIER,
    ParseError,
    parse,
)
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.routing import TenantHl7Settings

log = logging.getLogger("novaza.hl7.mllp")
ADDON = "hl7_fhir"
READ_SIZE = 64 * 1024
PIPELINE = 64  # frames read ahead of their ACKs, per connection


class _Drop(Exception):
    """Close the connection without an ACK: the sender must resend."""


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
        db: Database,
        settings: TenantHl7Settings,
        tenants: TenantCache,
        usage: UsageRecorder | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.settings = settings
        self.tenants = tenants
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._batcher = IntakeBatcher(db, usage=usage)

    async def start(self) -> None:
        self._batcher.start()
        # reuse_port: with ``novaza serve --workers N`` every worker listens on the one port
        # and the kernel spreads the connections over them (a connection stays with one).
        self._server = await asyncio.start_server(
            self._connection,
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
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._batcher.stop()
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        decoder = MllpDecoder(self.config.max_frame_bytes)
        pending: deque[_Pending] = deque()
        try:
            await self._serve(reader, writer, decoder, pending)
        except (TimeoutError, ConnectionError, _Drop):
            pass
        except Exception as exc:  # never a traceback: SQL errors carry message data
            log.error("mllp connection failed", extra={"error": type(exc).__name__})
        finally:
            for entry in pending:  # not yet in a group: never processed; else answered by resend
                entry.outcome.cancel()
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: MllpDecoder,
        pending: deque[_Pending],
    ) -> None:
        """Read frames while earlier ones are processed; write ACKs in frame order."""
        reading: asyncio.Task[bytes] | None = None
        ended = False
        try:
            while True:
                if reading is None and not ended and len(pending) < PIPELINE:
                    reading = asyncio.ensure_future(reader.read(READ_SIZE))
                waiting: set[asyncio.Future[bytes] | asyncio.Future[Outcome]] = set()
                if reading is not None:
                    waiting.add(reading)
                if pending:
                    waiting.add(pending[0].outcome)
                if not waiting:
                    return
                idle = None if pending else self.config.idle_timeout_seconds
                done, _ = await asyncio.wait(
                    waiting, timeout=idle, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    raise TimeoutError()
                if reading is not None and reading in done:
                    data, reading = reading.result(), None
                    ended = not data or not await self._frames(data, decoder, pending)
                await self._answer(writer, pending)
        finally:
            if reading is not None:
                reading.cancel()

    async def _frames(self, data: bytes, decoder: MllpDecoder, pending: deque[_Pending]) -> bool:
        """Queue the frames in ``data``; False when the connection must end after them."""
        try:
            frames = decoder.feed(data)
        except FrameTooLarge:
            error = ParseError(f"The frame is larger than {self.config.max_frame_bytes} bytes.")
            pending.append(_Pending(time.perf_counter(), _done(reject(b"", error)), True))
            return False
        for payload in frames:
            pending.append(await self._submit(payload))
        return True

    async def _answer(self, writer: asyncio.StreamWriter, pending: deque[_Pending]) -> None:
        """Write the ACKs that are ready, in order; a store failure drops the connection."""
        wrote = False
        while pending and pending[0].outcome.done():
            entry = pending.popleft()
            try:
                outcome = entry.outcome.result()
            except Exception as exc:
                raise _Drop() from exc
            wanted = entry.always or ack_wanted(outcome.header, outcome.ack.code)
            metrics.count("mllp", outcome, acked=wanted)
            if wanted:
                MLLP_ACK_SECONDS.observe(time.perf_counter() - entry.started)
                writer.write(frame(outcome.ack.data))
                wrote = True
        if wrote:
            await writer.drain()

    async def _submit(self, payload: bytes) -> _Pending:
        started = time.perf_counter()
        taken = await self._take(payload)
        if isinstance(taken, Received):
            try:
                return _Pending(started, self._batcher.submit(taken), False)
            except RuntimeError as exc:  # shutting down
                raise _Drop() from exc
        return _Pending(started, _done(taken), True)

    async def _take(self, payload: bytes) -> Received | Outcome:
        """A routed message to store, or the AR for one that is not taken."""
        try:
            message = parse(payload)
            header = message.header
            intake.check_type(header, intake.ANY)
        except ParseError as exc:
            return reject(payload, exc)
        route = await self.settings.route(
            header.receiving_application, header.receiving_facility, header.sending_facility
        )
        tenant = await self.tenants.get(route.tenant_id) if route else None
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

    async def handle(self, payload: bytes) -> bytes | None:
        """One framed message -> the ACK bytes to send (None: the sender asked for none)."""
        entry = await self._submit(payload)
        outcome = await entry.outcome
        wanted = entry.always or ack_wanted(outcome.header, outcome.ack.code)
        metrics.count("mllp", outcome, acked=wanted)
        return outcome.ack.data if wanted else None


def _done(outcome: Outcome) -> asyncio.Future[Outcome]:
    future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    future.set_result(outcome)
    return future
