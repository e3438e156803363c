"""The MLLP listener: asyncio TCP server, many messages per connection, one ACK each.

The tenant of a message comes from the tenants' ``hl7.mllpRoutes`` (MSH-5/6, MSH-4); an
unrouted message, a suspended tenant or one without the ``hl7_fhir`` add-on gets AR. The
ACK is written only after the message's transaction committed; if the store fails, the
connection is closed without an ACK so the sender resends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from novaza_gateway.config import Hl7Config
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import Database
from novaza_gateway.core.tenancy import TenantCache
from novaza_gateway.hl7 import intake, metrics
from novaza_gateway.hl7.ack import ack_wanted
from novaza_gateway.hl7.errors import MessageInFlight
from novaza_gateway.hl7.intake import Outcome
from novaza_gateway.hl7.metrics import MLLP_ACK_SECONDS
from novaza_gateway.hl7.mllp import FrameTooLarge, MllpDecoder, frame
from novaza_gateway.hl7.parser import (
    APPLICATION_INTERNAL_ERROR,
    UNKNOWN_KEY_IDENTIFIER,
    Message,
    ParseError,
    parse,
)
from novaza_gateway.hl7.processing import Hl7Context
from novaza_gateway.hl7.routing import TenantHl7Settings

log = logging.getLogger("novaza.hl7.mllp")
ADDON = "hl7_fhir"
READ_SIZE = 64 * 1024


class _Drop(Exception):
    """Close the connection without an ACK: the sender must resend."""


class MllpListener:
    def __init__(
        self,
        config: Hl7Config,
        db: Database,
        settings: TenantHl7Settings,
        tenants: TenantCache,
    ) -> None:
        self.config = config
        self.db = db
        self.settings = settings
        self.tenants = tenants
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # SQLite has one writer: queueing here beats its busy-timeout polling (p99 latency).
        self._writer_lock = asyncio.Lock() if db.engine.dialect.name == "sqlite" else None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.config.mllp_host, self.config.mllp_port or 0
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
        await self._server.wait_closed()
        self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        decoder = MllpDecoder(self.config.max_frame_bytes)
        try:
            await self._serve(reader, writer, decoder)
        except (TimeoutError, ConnectionError, _Drop):
            pass
        except Exception as exc:  # never a traceback: SQL errors carry message data
            log.error("mllp connection failed", extra={"error": type(exc).__name__})
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: MllpDecoder
    ) -> None:
        while True:
            data = await asyncio.wait_for(reader.read(READ_SIZE), self.config.idle_timeout_seconds)
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameTooLarge:
                error = ParseError(f"The frame is larger than {self.config.max_frame_bytes} bytes.")
                writer.write(frame(intake.reject(b"", error).ack.data))
                await writer.drain()
                return
            for payload in frames:
                started = time.perf_counter()
                ack = await self.handle(payload)
                if ack is not None:
                    MLLP_ACK_SECONDS.observe(time.perf_counter() - started)
                    writer.write(frame(ack))
                    await writer.drain()

    async def handle(self, payload: bytes) -> bytes | None:
        """One framed message -> the ACK bytes to send (None: the sender asked for none)."""
        try:
            message = parse(payload)
            header = message.header
            intake.check_type(header, intake.ANY)
        except ParseError as exc:
            return self._counted(intake.reject(payload, exc))
        route = await self.settings.route(
            header.receiving_application, header.receiving_facility, header.sending_facility
        )
        tenant = await self.tenants.get(route.tenant_id) if route else None
        if route is None or tenant is None or tenant.status != "active":
            refusal = ParseError(
                "No tenant receives messages for this receiving application/facility.",
                code=UNKNOWN_KEY_IDENTIFIER,
            )
            return self._counted(intake.reject(payload, refusal, header))
        if ADDON not in tenant.addons:
            refusal = ParseError(
                "The tenant's subscription does not include HL7 messaging.",
                code=APPLICATION_INTERNAL_ERROR,
            )
            return self._counted(intake.reject(payload, refusal, header))
        actor = Actor(f"mllp:{header.sending_application}"[:255], tenant.id)
        ctx = Hl7Context(tenant.id, actor, route.settings)
        outcome = await self._receive(ctx, payload, message)
        wanted = ack_wanted(outcome.header, outcome.ack.code)
        metrics.count("mllp", outcome, acked=wanted)
        return outcome.ack.data if wanted else None

    @staticmethod
    def _counted(outcome: Outcome) -> bytes:
        metrics.count("mllp", outcome)
        return outcome.ack.data

    async def _receive(self, ctx: Hl7Context, payload: bytes, message: Message) -> Outcome:
        for _ in range(2):  # a concurrent twin in flight: the second pass finds it stored
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if self._writer_lock is not None:
                        await stack.enter_async_context(self._writer_lock)
                    session = await stack.enter_async_context(self.db.session_scope())
                    return await intake.receive(
                        session, ctx, payload, channel="mllp", parsed=message
                    )
            except MessageInFlight:
                continue
            except Exception as exc:
                log.error(
                    "mllp message not stored",
                    extra={"error": type(exc).__name__, "tenant": ctx.tenant_id},
                )
                raise _Drop() from exc
        raise _Drop()
