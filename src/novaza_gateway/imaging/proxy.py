"""Proxy mode: a tenant's ``/med/qido``, ``/med/wado`` and ``/med/stow`` forwarded upstream.

The DICOMweb routers declare ``route_class=ProxiedRoute``: each route's app is wrapped in
``ProxySwitch``, which runs after the RouteGuard (so auth, scopes, the add-on gate, rate
limits and the body limit are the same in both modes) and before FastAPI resolves anything.
A tenant whose ``imaging`` settings say ``mode: proxy`` goes to ``ImagingProxy``; every
other request goes on to the embedded archive's handler untouched.

Bodies stream both ways: a STOW body goes from the ASGI receive channel straight into the
upstream request, a WADO answer from the upstream socket straight to the caller. Only the
small answers are read whole: QIDO pages (capped as in embedded mode) and STOW responses.
Every read is audited before the first byte of patient data leaves; refusals are audited
with the error code as outcome, as in embedded mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from novaza_gateway.clinical import orders
from novaza_gateway.config import ImagingConfig
from novaza_gateway.core import audit
from novaza_gateway.core.db import Database
from novaza_gateway.core.errors import ApiError, send_error
from novaza_gateway.core.health import Probe
from novaza_gateway.imaging import patient_merges, proxy_merges, proxy_search
from novaza_gateway.imaging.proxy_audit import (
    StudyPatients,
    first_string,
    stored_studies,
)
from novaza_gateway.imaging.proxy_errors import status_error, transport_error
from novaza_gateway.imaging.proxy_io import (
    coerced_stream,
    guarded,
    json_any,
    read_small,
    receive_body,
    rewritten,
)
from novaza_gateway.imaging.proxy_rewrite import (
    StreamRewriter,
    UrlRewriter,
    forwarded_query,
    is_text,
    request_headers,
    response_headers,
    upstream_path,
)
from novaza_gateway.imaging.upstream import (
    ClientLimits,
    SettingsSource,
    Upstream,
    UpstreamClients,
    UpstreamDirectory,
    UpstreamProbe,
)

log = logging.getLogger("novaza.imaging.proxy")

DICOM_JSON = "application/dicom+json"
LOOKUP_TIMEOUT_SECONDS = 2.0
READ_ACTIONS = {
    "retrieve_frames": "frames",
    "retrieve_bulkdata": "bulkdata",
    "rendered_instance": "rendered",
    "rendered_frame": "rendered",
    "thumbnail": "rendered",
}
UPSTREAM_REQUESTS = Counter(
    "novaza_imaging_upstream_requests_total",
    "Requests proxied to tenants' upstream DICOMweb servers, by kind and outcome.",
    ["kind", "outcome"],
)


class ProxiedRoute(APIRoute):
    """A DICOMweb route whose requests go upstream for a tenant in proxy mode."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = ProxySwitch(self.app, self.dependant)


class ProxySwitch:
    def __init__(self, app: ASGIApp, dependant: Dependant) -> None:
        self.app = app
        # the route's declared path parameters (UIDs, frame numbers: core.params), held to
        # the same bounds before a request goes upstream as the embedded handler holds them
        self.path_params = dependant.path_params

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy: ImagingProxy | None = getattr(scope["app"].state, "imaging_proxy", None)
        tenant = scope.get("state", {}).get("tenant")
        if proxy is None or tenant is None:
            await self.app(scope, receive, send)
            return
        call = Call.of(scope)
        try:
            upstream = await proxy.directory.for_tenant(tenant.id)
        except ApiError as error:
            await proxy.refused(call, error)
            await send_error(send, error)
            return
        if upstream is None:
            await self.app(scope, receive, send)  # embedded archive
            return
        _, errors = request_params_to_args(self.path_params, scope.get("path_params", {}))
        if errors:  # rendered by the validation handler, as in embedded mode
            raise RequestValidationError(errors)
        await proxy.forward(call, upstream, receive, send)


@dataclass(frozen=True, slots=True)
class Call:
    """One proxied request: who, for which tenant, which route, with what."""

    scope: Scope
    tenant_id: str
    actor: audit.Actor
    route: str
    kind: str  # qido | wado | stow
    params: dict[str, str]
    query: str  # the raw query string, as the caller encoded it

    @classmethod
    def of(cls, scope: Scope) -> Call:
        state = scope["state"]
        tenant_id = state["tenant"].id
        route = getattr(scope.get("route"), "name", "") or ""
        kind = scope["path"].split("/", 3)[2] if scope["path"].count("/") >= 2 else ""
        query = scope.get("query_string", b"").decode("latin-1")
        return cls(
            scope=scope,
            tenant_id=tenant_id,
            actor=audit.Actor(state["principal"].subject, tenant_id),
            route=route,
            kind=kind,
            params={k: str(v) for k, v in scope.get("path_params", {}).items()},
            query=query,
        )

    @property
    def study(self) -> str | None:
        return self.params.get("study")

    @property
    def level(self) -> str | None:
        """The level of the resource the path names (None: a search from the root)."""
        level, resource = self.resource()
        return level if resource is not None else None

    def resource(self) -> tuple[str, str | None]:
        for level, name in (("instance", "instance"), ("series", "series"), ("study", "study")):
            if name in self.params:
                return level, self.params[name]
        return "study", None


@dataclass
class ImagingProxy:
    directory: UpstreamDirectory
    clients: UpstreamClients
    database: Database
    patients: StudyPatients = field(default_factory=StudyPatients)

    @classmethod
    def build(
        cls, source: SettingsSource, database: Database, config: ImagingConfig, ttl: float
    ) -> ImagingProxy:
        """``app.py`` wires it: tenant settings from the tenants area, TTL-cached for ``ttl``.
        The owner closes ``clients`` at shutdown and may register ``probe()``."""
        limits = ClientLimits(
            connect_timeout_seconds=config.proxy_connect_timeout_seconds,
            read_timeout_seconds=config.proxy_read_timeout_seconds,
            max_connections=config.proxy_max_connections,
        )
        return cls(UpstreamDirectory(source, ttl), UpstreamClients(limits), database)

    def probe(self) -> Probe:
        check = UpstreamProbe(self.directory, self.clients)
        return Probe("imaging-upstreams", check, critical=False, timeout_seconds=2.0)

    async def forward(self, call: Call, upstream: Upstream, receive: Receive, send: Send) -> None:
        try:
            if call.kind == "qido":
                response = await proxy_search.search(self, call, upstream)
            elif call.kind == "stow":
                response = await self._store(call, upstream, receive)
            else:
                await self._retrieve(call, upstream, receive, send)
                return
        except ClientDisconnect:
            UPSTREAM_REQUESTS.labels(call.kind, "client_gone").inc()
            return  # nobody left to answer (or the body limit already answered 413)
        except httpx.HTTPError as exc:
            await self._fail(call, transport_error(exc), send)
            return
        except ApiError as error:
            await self._fail(call, error, send)
            return
        UPSTREAM_REQUESTS.labels(call.kind, str(response.status_code)).inc()
        await response(call.scope, receive, send)

    async def _fail(self, call: Call, error: ApiError, send: Send) -> None:
        reason = (error.details or {}).get("reason") or error.code.lower()
        UPSTREAM_REQUESTS.labels(call.kind, str(reason)).inc()
        await self.refused(call, error)
        await send_error(send, error)

    async def refused(self, call: Call, error: ApiError) -> None:
        """A read refused (by the upstream or for the upstream) is audited, as embedded."""
        if call.kind == "stow":
            return
        try:
            await self._audit(
                call, f"imaging.{call.route or 'request'}", "study", call.study,
                patient=None, outcome=error.code.lower()[:32],
            )  # fmt: skip
        except Exception as exc:  # the caller still gets the error it is owed
            log.error("audit of a refused read failed", extra={"error": type(exc).__name__})

    # ------------------------------------------------------------------ the three kinds

    async def _store(self, call: Call, upstream: Upstream, receive: Receive) -> Response:
        query, _ = forwarded_query(call.query)
        headers = request_headers(call.scope["headers"])
        headers["accept"] = DICOM_JSON
        body = receive_body(receive)
        response = await self.send(upstream, "POST", call, query, headers, body)
        try:
            if response.status_code not in (200, 202, 409) or not is_text(
                response.headers.get("content-type", "")
            ):
                raise status_error(response.status_code, call.kind)
            answer = await read_small(response)
        finally:
            await response.aclose()
        urls = self.urls(call, upstream)
        answer = StreamRewriter(urls).rewrite_all(answer)
        studies, stored, failed = stored_studies(json_any(answer))
        for study in studies:
            patient = await self.study_patient(upstream, call, study)
            await self._audit(
                call, "imaging.store", "study", study, patient=patient,
                after={"stored": stored, "failed": failed, "mode": "proxy"},
            )  # fmt: skip
            if stored:
                await self._start_worklist_item(call, study)
        return Response(answer, status_code=response.status_code, media_type=DICOM_JSON)

    async def _start_worklist_item(self, call: Call, study: str) -> None:
        """As the embedded archive does on a study's first instance: the scheduled item
        handed this Study Instance UID is now in progress. The upstream's answer names no
        accession number, so only the UID matches here (the one MWL hands the modality).
        The study is already stored upstream: a failure here is logged, not answered."""
        try:
            async with self.database.session_scope() as session:
                await orders.start_on_receipt(session, call.actor, call.tenant_id, study, "")
        except Exception as exc:
            log.error(
                "worklist start after a proxied store failed", extra={"error": type(exc).__name__}
            )

    async def _retrieve(self, call: Call, upstream: Upstream, receive: Receive, send: Send) -> None:
        query, _ = forwarded_query(call.query)
        headers = request_headers(call.scope["headers"])
        lookup = asyncio.create_task(self.study_patient(upstream, call)) if call.study else None
        try:
            response = await self.send(upstream, "GET", call, query, headers)
        except BaseException:
            if lookup is not None:
                lookup.cancel()
            raise
        try:
            if response.status_code >= 300:
                raise status_error(response.status_code, call.kind, call.level)
            patient = await lookup if lookup is not None else None
            level, resource = call.resource()
            action = READ_ACTIONS.get(call.route) or (
                "metadata" if call.route.endswith("metadata") else "retrieve"
            )
            metadata = action == "metadata"
            coerced = await self._audit(
                call, f"imaging.{action}", level, resource, patient=patient,
                after={"study": call.study, "mode": "proxy"},
                resolve=patient if metadata else None,
            )  # fmt: skip
            urls = self.urls(call, upstream)
            text = is_text(response.headers.get("content-type", ""))
            body = (
                rewritten(response.aiter_bytes(), StreamRewriter(urls))
                if text
                else guarded(response.aiter_raw())
            )
            if metadata and text and coerced:  # ADT A40: the survivor's Patient ID
                body = coerced_stream(body, proxy_merges.PatientIdCoercer(coerced))
            out = StreamingResponse(body, status_code=response.status_code)
            out.raw_headers = response_headers(
                response.headers.multi_items(), urls, body_rewritten=text
            )
            UPSTREAM_REQUESTS.labels(call.kind, str(response.status_code)).inc()
        except BaseException:
            if lookup is not None:
                lookup.cancel()
            await response.aclose()
            raise
        try:
            await out(call.scope, receive, send)
        finally:
            await response.aclose()

    # ------------------------------------------------------------------ helpers

    async def send(
        self,
        upstream: Upstream,
        method: str,
        call: Call,
        query: str,
        headers: dict[str, str],
        body: AsyncIterator[bytes] | None = None,
    ) -> httpx.Response:
        client = self.clients.client(upstream)
        url = upstream.base_url + upstream_path(call.scope["path"])
        if query:
            url = f"{url}?{query}"
        auth = upstream.auth or httpx.USE_CLIENT_DEFAULT
        request = client.build_request(method, url, headers=headers, content=body)
        try:
            return await client.send(request, stream=True, auth=auth)
        except httpx.RemoteProtocolError:
            if body is not None:
                raise
            # A pooled connection the upstream had closed (Orthanc keeps them 1 s): once more.
            return await client.send(request, stream=True, auth=auth)

    def urls(self, call: Call, upstream: Upstream) -> UrlRewriter:
        """Links point at the gateway as ``deps.base_url`` has it (never the Host header)."""
        gateway: str = call.scope["app"].state.settings.base_url
        return UrlRewriter(upstream.base_url, f"{gateway}/med/wado")

    async def study_patient(
        self, upstream: Upstream, call: Call, study: str | None = None
    ) -> str | None:
        study = study or call.study
        if study is None:
            return None

        async def lookup(uid: str) -> str | None:
            client = self.clients.client(upstream)
            try:
                response = await client.get(
                    f"{upstream.base_url}/studies",
                    params={"StudyInstanceUID": uid, "includefield": "00100020", "limit": "1"},
                    headers={"accept": DICOM_JSON, "accept-encoding": "identity"},
                    auth=upstream.auth or httpx.USE_CLIENT_DEFAULT,
                    timeout=LOOKUP_TIMEOUT_SECONDS,
                )
                found = response.json() if response.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                return None
            if isinstance(found, list) and found and isinstance(found[0], dict):
                return first_string(found[0], "00100020")
            return None

        return await self.patients.of_study(call.tenant_id, study, lookup)

    async def _audit(
        self,
        call: Call,
        action: str,
        resource_type: str,
        resource_id: str | None,
        *,
        patient: str | None,
        outcome: str = "success",
        after: dict[str, Any] | None = None,
        resolve: str | None = None,
    ) -> dict[str, str]:
        """Records the read; answers the ADT A40 coercion of ``resolve`` (a stored Patient
        ID -> the survivor's; empty when none), looked up in the same short session."""
        async with self.database.session_scope() as session:
            coerced: dict[str, str] = {}
            if resolve:
                lookup = patient_merges.MergeLookup(session, call.tenant_id)
                coerced = await lookup.coercions({resolve})
            self.record(
                session, call, action, resource_type, resource_id,
                patient=patient, outcome=outcome, after=after,
            )  # fmt: skip
        return coerced

    def record(
        self,
        session: AsyncSession,
        call: Call,
        action: str,
        resource_type: str,
        resource_id: str | None,
        *,
        patient: str | None,
        outcome: str = "success",
        after: dict[str, Any] | None = None,
    ) -> None:
        audit.record(
            session,
            call.actor,
            action,
            resource_type,
            resource_id,
            tenant_id=call.tenant_id,
            patient_id=patient,
            outcome=outcome,
            after=after,
        )
