"""The DICOM Modality Worklist SCP: pynetdicom in its threads, the database on the loop.

pynetdicom serves each association in a thread of its own. Handlers there never touch the
database: they hand a coroutine to the app's event loop (``run_coroutine_threadsafe``) and
wait for its answer, so the query uses the app's engine, pool and ``worklist.read()`` —
the very function behind the REST worklist, audit included (ADR 0033).

The calling AE title names the tenant (``imaging.aeTitles`` of an active tenant with the
``medical_imaging`` add-on). Any other calling AE title is rejected at association time
(A-ASSOCIATE-RJ, "calling AE title not recognized"); a title two tenants claim is rejected
too, never guessed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from prometheus_client import Counter
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from novaza_gateway.config import MwlConfig
from novaza_gateway.core.audit import Actor
from novaza_gateway.core.db import Database
from novaza_gateway.core.health import Probe
from novaza_gateway.core.ids import new_id
from novaza_gateway.core.lifecycle import Lifecycle
from novaza_gateway.core.logging import request_id_var
from novaza_gateway.core.tenancy import TenantCache
from novaza_gateway.imaging import mwl, worklist
from novaza_gateway.imaging.settings import ImagingSettings
from novaza_gateway.imaging.worklist import WorklistEntry, WorklistFilter

log = logging.getLogger("novaza.imaging.mwl")
ADDON = "medical_imaging"
SECTION = "imaging"
NOBODY = "\x00"  # no association carries this calling AE title: with no tenant, reject all
SUCCESS, PENDING, CANCEL = 0x0000, 0xFF00, 0xFE00
UNMATCHABLE, UNABLE = 0xA900, 0xC000  # identifier does not match; unable to process
MWL_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND
VERIFICATION = "1.2.840.10008.1.1"  # C-ECHO, how modalities test the connection
T = TypeVar("T")

MWL_ASSOCIATIONS = Counter(
    "novaza_mwl_associations_total", "MWL SCP associations", ["result"]
)  # accepted | rejected
MWL_QUERIES = Counter(
    "novaza_mwl_queries_total", "MWL C-FIND requests", ["outcome"]
)  # success | canceled | unmatchable | refused | error


class SettingsSource(Protocol):
    """Tenant settings sections; ``app.py`` wires the tenants area's directory."""

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class AeRoute:
    tenant_id: str
    zone: ZoneInfo


class _Refused(Exception):
    """The calling AE's tenant may not query (gone, suspended, add-on dropped)."""


class CallingAeDirectory:
    """Calling AE title -> tenant, rebuilt from tenant settings at most every ``ttl``."""

    def __init__(self, source: SettingsSource, tenants: TenantCache, ttl: float) -> None:
        self._source = source
        self._tenants = tenants
        self._ttl = ttl
        self._routes: dict[str, AeRoute] = {}
        self._expires = 0.0
        self._lock = asyncio.Lock()

    @property
    def snapshot(self) -> dict[str, AeRoute]:
        return self._routes

    async def routes(self) -> dict[str, AeRoute]:
        if self._expires > time.monotonic():
            return self._routes
        async with self._lock:
            if self._expires <= time.monotonic():
                self._routes = await self._load()
                self._expires = time.monotonic() + self._ttl
        return self._routes

    async def _load(self) -> dict[str, AeRoute]:
        claimed: dict[str, list[AeRoute]] = {}
        for tenant_id, section in await self._source.sections(SECTION):
            try:
                settings = ImagingSettings.model_validate(section)
            except ValueError:
                log.warning("imaging settings invalid", extra={"tenant": tenant_id})
                continue
            tenant = await self._tenants.get(tenant_id)
            if tenant is None or tenant.status != "active" or ADDON not in tenant.addons:
                continue
            route = AeRoute(tenant_id, ZoneInfo(settings.time_zone))
            for title in dict.fromkeys(settings.ae_titles):
                claimed.setdefault(title, []).append(route)
        routes = {}
        for title, owners in claimed.items():
            if len(owners) > 1:
                log.warning(
                    "calling AE title claimed by several tenants: rejected", extra={"ae": title}
                )
                continue
            routes[title] = owners[0]
        return routes


class _TenantAE(AE):
    """An AE whose accepted calling AE titles are the tenants' current ones."""

    def __init__(self, ae_title: str, allowed: Callable[[], list[str]]) -> None:
        super().__init__(ae_title)
        self._allowed = allowed

    @property
    def require_calling_aet(self) -> list[str]:
        return self._allowed() or [NOBODY]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        raise AttributeError("calling AE titles come from tenant settings")


class MwlServer:
    def __init__(
        self,
        config: MwlConfig,
        db: Database,
        source: SettingsSource,
        tenants: TenantCache,
        settings_ttl_seconds: float,
    ) -> None:
        self.config = config
        self.db = db
        self.tenants = tenants
        self.directory = CallingAeDirectory(source, tenants, settings_ttl_seconds)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._ae: _TenantAE | None = None
        self._server: ThreadedAssociationServer | None = None

    def wire(self, lifecycle: Lifecycle) -> None:
        lifecycle.on_startup(self.start)
        lifecycle.on_shutdown(self.stop)

    def probes(self) -> list[Probe]:
        return [Probe("mwl", self._listening)]

    async def _listening(self) -> str | None:
        if not self.serving:
            raise RuntimeError("MWL SCP not serving")
        return f"port {self.port}, {len(self.directory.snapshot)} calling AE titles"

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its DEBUG dumps identifiers
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.directory.routes()
        ae = _TenantAE(self.config.ae_title, self._allowed_calling_aets)
        ae.add_supported_context(MWL_FIND)
        ae.add_supported_context(VERIFICATION)
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        address = (self.config.host, self.config.port or 0)
        server = ae.start_server(address, block=False, evt_handlers=handlers)
        assert server is not None  # non-blocking: the server is answered
        self._ae, self._server = ae, server
        self.port = int(server.server_address[1])
        log.info("mwl scp listening", extra={"port": self.port})

    async def stop(self) -> None:
        if self._ae is None:
            return
        ae, self._ae, self._server = self._ae, None, None
        # Association threads may be waiting on this loop: shut down from another thread.
        await asyncio.to_thread(ae.shutdown)

    # ------------------------------------------------------------------ association threads

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the app's loop and wait for it (from a pynetdicom thread)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=self.config.query_timeout_seconds)
        except TimeoutError:
            future.cancel()
            raise

    def _allowed_calling_aets(self) -> list[str]:
        if self._loop is None or threading.get_ident() == self._loop_thread:
            return list(self.directory.snapshot)  # never block the loop on itself
        return list(self._on_loop(self.directory.routes()))

    def _on_accepted(self, event: Event) -> None:
        MWL_ASSOCIATIONS.labels("accepted").inc()

    def _on_rejected(self, event: Event) -> None:
        MWL_ASSOCIATIONS.labels("rejected").inc()
        log.info("mwl association rejected", extra={"ae": event.assoc.requestor.ae_title})

    def _on_find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        calling = event.assoc.requestor.ae_title
        try:
            identifier = event.identifier
            route = self._on_loop(self.directory.routes()).get(calling)
            if route is None:
                raise _Refused()
            wanted = mwl.parse(identifier, route.zone)
            entries = self._on_loop(self._read(route.tenant_id, calling, wanted))
        except mwl.MwlQueryError:
            MWL_QUERIES.labels("unmatchable").inc()
            yield UNMATCHABLE, None
            return
        except _Refused:
            MWL_QUERIES.labels("refused").inc()
            yield UNABLE, None
            return
        except Exception as exc:  # never a traceback: SQL errors carry patient data
            MWL_QUERIES.labels("error").inc()
            log.error("mwl query failed", extra={"error": type(exc).__name__, "ae": calling})
            yield UNABLE, None
            return
        for entry in entries:
            if event.is_cancelled:
                MWL_QUERIES.labels("canceled").inc()
                yield CANCEL, None
                return
            yield PENDING, mwl.answer(entry, identifier, route.zone)
        MWL_QUERIES.labels("success").inc()

    # ------------------------------------------------------------------ on the loop

    async def _read(
        self, tenant_id: str, calling: str, wanted: WorklistFilter
    ) -> list[WorklistEntry]:
        tenant = await self.tenants.get(tenant_id)
        if tenant is None or tenant.status != "active" or ADDON not in tenant.addons:
            raise _Refused()
        request_id_var.set(f"mwl-{new_id()[:16]}")  # this task's context only
        actor = Actor(f"mwl:{calling}", tenant_id)
        async with self.db.session_scope() as session:
            return await worklist.read(
                session, actor, tenant_id, wanted, channel="mwl", limit=self.config.max_results
            )
