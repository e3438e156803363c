"""Route policy: what a route demands (auth, tenant, scopes, add-on, rate limit, body size).

Routes declare their policy with ``**policy(...)`` in the decorator; ``app.py`` wraps each
route's ASGI app in a ``RouteGuard``. The guard is pure ASGI, runs after Starlette matched the
route (so no second routing pass, and the route template is known) and before FastAPI reads
the body or resolves dependencies. Order: authenticate, resolve tenant, authorize, rate limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novaza_gateway.core.auth import Principal, TokenVerifier, bearer_token, fail
from novaza_gateway.core.authlimit import AuthFailureLimit, client_host
from novaza_gateway.core.controlchars import JsonScan, scans_as_json
from novaza_gateway.core.errors import (
    AddonRequired,
    ApiError,
    Forbidden,
    InvalidCharacters,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    send_error,
)
from novaza_gateway.core.metering import API_REQUESTS, Dimensions, UsageRecorder
from novaza_gateway.core.metrics import TENANT_OVERRIDES
from novaza_gateway.core.ratelimit import RateLimiter
from novaza_gateway.core.requestid import RESPONSE_HEADERS
from novaza_gateway.core.tenancy import TenantCache, TenantContext

POLICY_KEY = "x-novaza-policy"
OVERRIDE_SCOPE = "tenant:override"
ADMIN_SCOPE = "platform:admin"
# Every scope a tenant user may hold (PRODUCT.md); dev tokens get all of them by default.
TENANT_SCOPES = (
    "imaging:read",
    "imaging:write",
    "hl7:write",
    "patients:read",
    "rooms:write",
    "ai:use",
    "desk:read",
    "desk:write",
    "billing:read",
    "billing:manage",
)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    public: bool = False
    scopes: frozenset[str] = field(default_factory=frozenset)
    addon: str | None = None
    tenant: bool = True
    max_body_bytes: int | None = None
    meter: str | None = None  # product area label: admitted requests count as api_requests
    alt_auth: str | None = None  # an alternative authenticator tried before the JWT
    meter_bytes: str | None = None  # a meter that counts the response body bytes sent

    def describe(self) -> dict[str, Any]:
        return {
            "public": self.public,
            "scopes": sorted(self.scopes),
            "addon": self.addon,
            "tenant": self.tenant,
            "maxBodyBytes": self.max_body_bytes,
            "meter": self.meter,
            "altAuth": self.alt_auth,
            "meterBytes": self.meter_bytes,
        }

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> Policy:
        return cls(
            public=bool(described["public"]),
            scopes=frozenset(described["scopes"]),
            addon=described["addon"],
            tenant=bool(described["tenant"]),
            max_body_bytes=described["maxBodyBytes"],
            meter=described.get("meter"),
            alt_auth=described.get("altAuth"),
            meter_bytes=described.get("meterBytes"),
        )


DEFAULT_POLICY = Policy()


def policy(
    *scopes: str,
    addon: str | None = None,
    tenant: bool = True,
    public: bool = False,
    max_body_bytes: int | None = None,
    meter: str | None = None,
    errors: dict[int, str] | None = None,
    responses: dict[int | str, dict[str, Any]] | None = None,
    alt_auth: str | None = None,
    meter_bytes: str | None = None,
) -> dict[str, Any]:
    """Route decorator keywords: the policy itself plus its OpenAPI description.

    ``alt_auth`` names an alternative authenticator registered on the ``Gatekeeper`` (e.g.
    imaging's signed URLs): it judges requests carrying its credential, others fall to JWT.
    """
    declared = Policy(
        public,
        frozenset(scopes),
        addon,
        tenant and not public,
        max_body_bytes,
        meter,
        alt_auth,
        meter_bytes,
    )
    if (meter or meter_bytes) and not declared.tenant:
        raise ValueError("only tenant routes are metered")
    described: dict[int, str] = {}
    if not public:
        described[401] = "UNAUTHENTICATED"
        forbidden = ["FORBIDDEN"]
        if declared.tenant:
            forbidden += ["TENANT_UNKNOWN", "TENANT_SUSPENDED", "TENANT_INACTIVE"]
        if addon:
            forbidden.append("ADDON_REQUIRED")
        described[403] = ", ".join(forbidden)
        described[429] = "RATE_LIMITED"  # the tenant's limit, or failed authentications
    described.update(errors or {})
    # Any route: the front door refuses control characters in the path or query.
    described[400] = ", ".join(filter(None, (described.get(400), "INVALID_CHARACTERS")))
    described = dict(sorted(described.items()))
    extra: dict[str, Any] = {POLICY_KEY: declared.describe()}
    if not public:
        extra["security"] = [{"bearer": sorted(scopes)}]
    return {
        "openapi_extra": extra,
        "responses": {
            **{
                status: {"model": ErrorBody, "description": f"Error codes: {codes}"}
                for status, codes in described.items()
            },
            **(responses or {}),
        },
    }


class AltAuthenticator(Protocol):
    async def authenticate(self, scope: Scope) -> Principal | None:
        """A principal for a request carrying this authenticator's credential; None when it
        carries none (JWT verification follows); raises ``ApiError`` for a bad credential."""


@dataclass(slots=True)
class Gatekeeper:
    """The shared machinery every guard consults; built once in the app's lifespan."""

    verifier: TokenVerifier
    tenants: TenantCache
    limiter: RateLimiter
    default_max_body_bytes: int
    usage: UsageRecorder | None = None  # billing's, wired in app.py
    alt_auth: dict[str, AltAuthenticator] = field(default_factory=dict)  # wired in app.py
    auth_failures: AuthFailureLimit | None = None  # per client address, wired in app.py

    async def authenticate(self, scope: Scope, alt: str | None = None) -> Principal:
        limit = self.auth_failures
        if limit is None:
            return await self._authenticate(scope, alt)
        address = client_host(scope)
        blocked = limit.refused(address)  # before any signature check, from memory
        if blocked is not None:
            raise blocked
        try:
            return await self._authenticate(scope, alt)
        except Unauthenticated:
            limited = await limit.failed(address)  # only failures reach the shared limiter
            if limited is not None:
                raise limited from None
            raise

    async def _authenticate(self, scope: Scope, alt: str | None) -> Principal:
        if alt is not None:
            principal = await self.alt_auth[alt].authenticate(scope)
            if principal is not None:
                return principal
        token = bearer_token(scope["headers"])
        if token is None:
            raise fail("missing")
        return await self.verifier.verify(token)

    async def tenant_for(self, scope: Scope, principal: Principal) -> TenantContext:
        override = _header(scope, b"x-tenant-id")
        if override is not None:
            if OVERRIDE_SCOPE not in principal.scopes:
                raise Forbidden("X-Tenant-ID is only honoured for service tokens.")
            key = override
            scope["state"]["tenant_override"] = True  # audited and logged as such
            TENANT_OVERRIDES.labels(caller=principal.subject[:64]).inc()
        elif principal.tenant:
            key = principal.tenant
        else:
            raise Forbidden("The token names no tenant.")
        return await self.tenants.resolve(key)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RouteGuard:
    def __init__(self, app: ASGIApp, declared: Policy, gate: Gatekeeper) -> None:
        self.app = app
        self.policy = declared
        self.gate = gate
        self.max_body = declared.max_body_bytes or gate.default_max_body_bytes
        self.meter_dimensions: Dimensions = (("area", declared.meter),) if declared.meter else ()
        if declared.alt_auth is not None and declared.alt_auth not in gate.alt_auth:
            raise RuntimeError(f"no authenticator '{declared.alt_auth}' is wired")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.policy.public:
            await self.app(scope, receive, send)
            return
        try:
            extra_headers = await self._admit(scope)
        except ApiError as error:
            await send_error(send, error)
            return
        if extra_headers:
            outgoing = scope.get(RESPONSE_HEADERS)
            if outgoing is not None:  # the front door adds them: no send wrapper per request
                outgoing.extend(extra_headers)
            else:
                send = _with_headers(send, extra_headers)
        meter = self.policy.meter_bytes
        if meter is None or self.gate.usage is None:
            await self._serve(scope, receive, send)
            return
        counter = _ByteCounter(send)
        try:
            await self._serve(scope, receive, counter.send)
        finally:  # a retrieve cut short is billed for what was sent
            if counter.sent:
                self.gate.usage.record(scope["state"]["tenant"].id, meter, counter.sent)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        scan = JsonScan() if scans_as_json(_header(scope, b"content-type")) else None
        await BodyLimit(self.max_body, scan)(self.app, scope, receive, send)

    async def _admit(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        state = scope.setdefault("state", {})
        principal = await self.gate.authenticate(scope, self.policy.alt_auth)
        state["principal"] = principal
        declared = self.policy
        if not declared.tenant:
            if not principal.has_scopes(declared.scopes):
                raise Forbidden(f"Needs scope {' '.join(sorted(declared.scopes))}.")
            self._check_length(scope)
            return []
        tenant = await self.gate.tenant_for(scope, principal)
        state["tenant"] = tenant
        state["tenant_slug"] = tenant.slug
        if not principal.has_scopes(declared.scopes):
            raise Forbidden(f"Needs scope {' '.join(sorted(declared.scopes))}.")
        if declared.addon and declared.addon not in tenant.addons:
            raise AddonRequired(declared.addon)
        decision = await self.gate.limiter.decide(tenant.id, tenant.rate_limit)
        window = tenant.rate_limit.burst / tenant.rate_limit.rate_per_second
        headers = decision.headers(window)
        if not decision.allowed:
            retry = max(1, int(decision.retry_after_seconds + 0.999))
            raise RateLimited(retry, {k.decode(): v.decode() for k, v in headers})
        self._check_length(scope)
        if self.meter_dimensions and self.gate.usage is not None:  # an in-memory append
            self.gate.usage.record(tenant.id, API_REQUESTS, dimensions=self.meter_dimensions)
        return headers

    def _check_length(self, scope: Scope) -> None:
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise PayloadTooLarge(details={"maxBytes": self.max_body})


class BodyLimit:
    """Counts body bytes as the app reads them; past the limit, answers 413 and hangs up.
    With a ``JsonScan``, a JSON string escaping a control character is answered 400 the
    same way, before the app parsed the body (core.controlchars).

    Raising from ``receive`` would reach FastAPI's body parser, which turns any error into
    400. Instead the guard answers itself and tells the app the client disconnected.
    """

    def __init__(self, limit: int, scan: JsonScan | None = None) -> None:
        self.limit = limit
        self.scan = scan
        self.seen = 0
        self.rejected = False
        self.started = False

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            if self.rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                self.seen += len(body)
                error: ApiError | None = None
                if self.seen > self.limit:
                    error = PayloadTooLarge(details={"maxBytes": self.limit})
                elif self.scan is not None and self.scan.feed(body):
                    error = InvalidCharacters("body")
                if error is not None:
                    self.rejected = True
                    if not self.started:
                        self.started = True
                        await send_error(send, error)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if self.rejected:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await app(scope, counting_receive, guarded_send)
        except Exception:
            if not self.rejected:
                raise


class _ByteCounter:
    """Body bytes of a successful answer as they leave; error envelopes are not the product."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._counting = False
        self.sent = 0

    async def send(self, message: Message) -> None:
        await self._send(message)
        if message["type"] == "http.response.start":
            self._counting = message["status"] < 400
        elif message["type"] == "http.response.body" and self._counting:
            self.sent += len(message.get("body", b""))


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *headers]
        await send(message)

    return send_with_headers
