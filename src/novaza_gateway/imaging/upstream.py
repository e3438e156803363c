"""Proxy mode's upstreams: which DICOMweb server a tenant's images live on, one pooled
``httpx.AsyncClient`` per server, and the rule that no server is shared by two tenants.

An upstream belongs to one tenant. Two tenants naming the same server (the same host by
any alias and port, one root path within the other's, compared in the normal form of
``upstream_key``: Orthanc's ``/dicom-web`` and ``/dicom-web/`` and ``/dicom-web/studies`` are
one archive; dcm4chee's ``/aets/A/rs`` and ``/aets/B/rs`` are two) are refused when the
settings are saved (``clash``, wired into the tenant settings sections) and again on every
request (``UpstreamDirectory``), which catches what a race between two saves or settings older
than the rule let through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx
from pydantic import ValidationError

from novaza_gateway.imaging.errors import UpstreamMisconfigured, UpstreamShared
from novaza_gateway.imaging.settings import ImagingSettings
from novaza_gateway.imaging.upstream_key import UpstreamKey

log = logging.getLogger("novaza.imaging.proxy")

SECTION = "imaging"
# A study that cannot exist (2.25.0 is a UUID-derived UID of the nil UUID): the readiness
# probe asks for it, so it checks reachability and credentials and reads no patient data.
PROBE_STUDY = "2.25.0"
READ_BYTES = 256 * 1024


class SettingsSource(Protocol):
    """Tenant settings sections; ``app.py`` wires the tenants area's implementation."""

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None: ...

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class Upstream:
    tenant_id: str
    base_url: str  # the DICOMweb root as configured, without a trailing slash
    key: UpstreamKey
    auth: httpx.BasicAuth | None

    @classmethod
    def of(cls, tenant_id: str, settings: ImagingSettings) -> Upstream:
        if settings.upstream_url is None:
            raise UpstreamMisconfigured()
        base = str(settings.upstream_url).rstrip("/")
        auth = None
        if settings.upstream_username is not None:
            password = settings.upstream_password
            secret = password.get_secret_value() if password is not None else ""
            auth = httpx.BasicAuth(settings.upstream_username, secret)
        return cls(tenant_id, base, UpstreamKey.of(base), auth)


def proxy_key(section: dict[str, Any]) -> UpstreamKey | None:
    """The upstream a stored ``imaging`` section proxies to; None in embedded mode."""
    if section.get("mode") != "proxy" or not section.get("upstreamUrl"):
        return None
    return UpstreamKey.of(str(section["upstreamUrl"]))


def clash(section: dict[str, Any], other: dict[str, Any]) -> str | None:
    """Settings-save check: the field on which two tenants' ``imaging`` sections collide."""
    mine, theirs = proxy_key(section), proxy_key(other)
    if mine is not None and theirs is not None and mine.clashes(theirs):
        return "upstreamUrl"
    return None


class UpstreamDirectory:
    """Each tenant's upstream (None: embedded archive), from tenant settings, TTL-cached.

    The table of every active tenant's upstream is cached too; a tenant whose upstream
    clashes with another tenant's is refused (``IMAGING_UPSTREAM_SHARED``).
    """

    def __init__(self, source: SettingsSource, ttl_seconds: float) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._tenants: dict[str, tuple[Upstream | None, float]] = {}
        self._owners: tuple[list[tuple[str, UpstreamKey]], float] = ([], 0.0)
        self._owners_lock = asyncio.Lock()

    async def for_tenant(self, tenant_id: str) -> Upstream | None:
        entry = self._tenants.get(tenant_id)
        if entry is not None and entry[1] > time.monotonic():
            upstream = entry[0]
        else:
            upstream = await self._load(tenant_id)
            self._tenants[tenant_id] = (upstream, time.monotonic() + self._ttl)
        if upstream is not None:
            for owner, key in await self.owners():
                if owner != tenant_id and key.clashes(upstream.key):
                    log.error("imaging upstream shared by two tenants", extra={"tenant": tenant_id})
                    raise UpstreamShared()
        return upstream

    async def _load(self, tenant_id: str) -> Upstream | None:
        section = await self._source.section(tenant_id, SECTION)
        try:
            settings = ImagingSettings.model_validate(section or {})
        except ValidationError:
            raise UpstreamMisconfigured() from None
        if settings.mode != "proxy":
            return None
        return Upstream.of(tenant_id, settings)

    async def owners(self) -> list[tuple[str, UpstreamKey]]:
        """(tenant id, upstream) of every active tenant in proxy mode."""
        table, expires = self._owners
        if expires > time.monotonic():
            return table
        async with self._owners_lock:  # one load, however many requests wait for it
            table, expires = self._owners
            if expires > time.monotonic():
                return table
            table = []
            for tenant_id, section in await self._source.sections(SECTION):
                key = proxy_key(section)
                if key is not None:
                    table.append((tenant_id, key))
            self._owners = (table, time.monotonic() + self._ttl)
            return table

    async def configured(self) -> list[Upstream]:
        """Every active tenant's upstream (for the readiness probe)."""
        found = []
        for tenant_id, _ in await self.owners():
            try:
                upstream = await self.for_tenant(tenant_id)
            except (UpstreamShared, UpstreamMisconfigured):
                continue
            if upstream is not None:
                found.append(upstream)
        return found


@dataclass(frozen=True, slots=True)
class ClientLimits:
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    max_connections: int = 50


class UpstreamClients:
    """One pooled ``httpx.AsyncClient`` per upstream server, closed on shutdown."""

    def __init__(self, limits: ClientLimits, transport: httpx.AsyncBaseTransport | None = None):
        # httpcore reads a response body 64 KiB at a time, and each read is one trip through
        # httpcore, h11 and httpx: on a large retrieve that is the proxy's main cost. Reads
        # take what the socket has, up to this (uvloop hands over up to 256 KiB at once).
        # (A class attribute: every httpx client of the process reads so; harmless, as a
        # read never waits for more than the socket has.) Measured in docs/benchmarks.md.
        if httpcore.AsyncHTTP11Connection.READ_NUM_BYTES < READ_BYTES:
            httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES
        self._limits = limits
        self._transport = transport  # tests only
        self._clients: dict[UpstreamKey, httpx.AsyncClient] = {}

    def client(self, upstream: Upstream) -> httpx.AsyncClient:
        found = self._clients.get(upstream.key)
        if found is None:
            limits = self._limits
            timeout = httpx.Timeout(
                limits.read_timeout_seconds,
                connect=limits.connect_timeout_seconds,
                pool=limits.connect_timeout_seconds,
            )
            found = httpx.AsyncClient(
                timeout=timeout,
                limits=httpx.Limits(
                    max_connections=limits.max_connections,
                    max_keepalive_connections=limits.max_connections,
                    keepalive_expiry=30.0,
                ),
                follow_redirects=False,
                trust_env=False,
                transport=self._transport,
            )
            self._clients[upstream.key] = found
        return found

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()


class UpstreamProbe:
    """Readiness: can the gateway reach every configured upstream with its credentials?

    Not critical (one tenant's archive being down must not take the replica out of
    rotation): a failure shows as degraded. The answer names counts, never tenants or
    hosts (``/health/ready`` is public). Results are cached for ``ttl_seconds``.
    """

    def __init__(
        self,
        directory: UpstreamDirectory,
        clients: UpstreamClients,
        ttl_seconds: float = 15.0,
        timeout_seconds: float = 1.5,
    ) -> None:
        self._directory = directory
        self._clients = clients
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._cached: tuple[str | None, float] = (None, 0.0)

    async def __call__(self) -> str | None:
        note, expires = self._cached
        if expires > time.monotonic():
            return note
        upstreams = await self._directory.configured()
        results = await asyncio.gather(*(self._check(u) for u in upstreams))
        failing = sum(1 for ok in results if not ok)
        if not upstreams:
            note = "no upstream configured"
        elif failing:
            note = f"degraded: {failing} of {len(upstreams)} imaging upstreams failing"
        else:
            note = f"{len(upstreams)} imaging upstreams reachable"
        self._cached = (note, time.monotonic() + self._ttl)
        return note

    async def _check(self, upstream: Upstream) -> bool:
        client = self._clients.client(upstream)
        try:
            response = await client.get(
                f"{upstream.base_url}/studies",
                params={"StudyInstanceUID": PROBE_STUDY},
                headers={"accept": "application/dicom+json", "accept-encoding": "identity"},
                auth=upstream.auth or httpx.USE_CLIENT_DEFAULT,
                timeout=self._timeout,
            )
        except httpx.HTTPError:
            return False
        return response.status_code < 300
