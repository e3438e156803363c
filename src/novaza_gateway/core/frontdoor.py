"""``FrontDoor``: the outermost ASGI app every request enters, and ``GatewayApp`` that uses it.

One layer does what every request needs on the way in and out: the request id and the API
version header, the Prometheus count and latency, the access line, and the last-resort error
envelope. It finds the request's route once, and refuses a path or query holding control
characters before any route code runs (``core.controlchars``). A ``StateRoute`` (whoami,
``/health``: answered from what the guard resolved, no parameters, no dependencies) is called
straight away; every other request goes through the framework's own layers (exception
handlers for validation errors and ``HTTPException``, the exit stack for dependencies with
``yield``), which then reuse the route already found.

Why: on a request that does no I/O, each framework layer (server-error catcher, telemetry
probe, body-size limit, exception handlers, exit stack) is a coroutine and a ``send``
wrapper, and end to end the layers cost about as much as our own auth, tenant and rate-limit
work (docs/benchmarks.md, ADR 0005).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novaza_gateway import API_VERSION
from novaza_gateway.core import accesslog
from novaza_gateway.core.controlchars import refused
from novaza_gateway.core.errors import classify, log_failure, send_error
from novaza_gateway.core.logging import caller_request_id_var, request_id_var
from novaza_gateway.core.metrics import HttpMetrics
from novaza_gateway.core.requestid import (
    RESPONSE_HEADERS,
    caller_request_id,
    new_request_id,
    route_template,
)
from novaza_gateway.core.routeindex import FOUND, RouteIndex
from novaza_gateway.core.stateroute import StateRoute

log = logging.getLogger("novaza.access")
_VERSION_HEADER = (b"x-api-version", API_VERSION.encode())


class FrontDoor:
    def __init__(self, framework: ASGIApp, index: RouteIndex) -> None:
        self.framework = framework
        self.index = index
        self.metrics = HttpMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.framework(scope, receive, send)
            return
        request_id = new_request_id()
        caller_id = caller_request_id(scope["headers"])
        token = request_id_var.set(request_id)
        caller_token = caller_request_id_var.set(caller_id)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        headers_out = [(b"x-request-id", (caller_id or request_id).encode()), _VERSION_HEADER]
        scope[RESPONSE_HEADERS] = headers_out
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *headers_out]
            await send(message)

        begin = time.perf_counter()
        try:
            route = self.index.find(scope)
            refusal = refused(scope)  # control characters in the path or query: no further
            if refusal is not None:
                await send_error(send_with_headers, refusal)
            elif isinstance(route, StateRoute):  # matched in full, method included
                await route.app(scope, receive, send_with_headers)
            else:
                if route is not None:
                    scope[FOUND] = route
                await self.framework(scope, receive, send_with_headers)
        except Exception as exc:
            error = classify(exc)
            log_failure(exc, error, route_template(scope))
            if not started:
                await send_error(send_with_headers, error)
        finally:
            elapsed = time.perf_counter() - begin
            route_name = route_template(scope)
            method = scope["method"]
            self.metrics.observe(method, route_name, status, elapsed)
            fields = {
                "method": method,
                "route": route_name,
                "status": status,
                "durationMs": round(elapsed * 1000, 2),
                "tenant": state.get("tenant_slug"),
                "client": client[0] if (client := scope.get("client")) else None,
            }
            principal = state.get("principal")
            if principal is not None:  # who asked, and for whom (ADR 0081)
                fields["subject"] = principal.subject
                if state.get("tenant_override"):
                    fields["homeTenant"] = principal.tenant
                    fields["override"] = True
            if caller_id is not None:
                fields["callerRequestId"] = caller_id
            accesslog.access(request_id, fields)
            caller_request_id_var.reset(caller_token)
            request_id_var.reset(token)


class GatewayApp(FastAPI):
    """FastAPI with the front door outermost and the framework's layers trimmed to those our
    routes use: exception handlers (validation errors, ``HTTPException``, ``ApiError``) and
    the exit stack. The server-error layer is the front door's own envelope; the telemetry
    probe is off (metrics are Prometheus); body sizes are the route guard's."""

    def build_middleware_stack(self) -> ASGIApp:
        handlers = {k: v for k, v in self.exception_handlers.items() if k not in (500, Exception)}
        framework: ASGIApp = AsyncExitStackMiddleware(self.router)
        framework = ExceptionMiddleware(framework, handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            framework = cls(framework, *args, **kwargs)
        index = self.router.middleware_stack
        if not isinstance(index, RouteIndex):
            index = self.router.middleware_stack = RouteIndex(self.router)
        return FrontDoor(framework, index)
