"""Outermost middleware: request id, API version header, the last-resort 500, access log.

Every response, including 404/405/429 and crashes, leaves through here and gets
``X-Request-Id`` and ``X-API-Version``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from novaza_gateway import API_VERSION
from novaza_gateway.core import accesslog
from novaza_gateway.core.errors import Internal, classify, send_error
from novaza_gateway.core.logging import request_id_var

log = logging.getLogger("novaza.access")
_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
_VERSION_HEADER = (b"x-api-version", API_VERSION.encode())


def caller_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _VALID_ID.match(value):
                return value.decode()
            break
    return os.urandom(16).hex()  # 128 random bits as uuid4().hex, without the UUID object


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = caller_request_id(scope["headers"])
        token = request_id_var.set(request_id)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header, _VERSION_HEADER]
            await send(message)

        begin = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_ids)
        except Exception as exc:
            error = classify(exc)
            if isinstance(error, Internal):
                log.exception("unhandled error", extra={"route": route_template(scope)})
            else:
                log.error("dependency failed", extra={"error": type(exc).__name__})
            if not started:
                await send_error(send_with_ids, error)
        finally:
            accesslog.access(
                request_id,
                {
                    "method": scope["method"],
                    "route": route_template(scope),
                    "status": status,
                    "durationMs": round((time.perf_counter() - begin) * 1000, 2),
                    "tenant": state.get("tenant_slug"),
                },
            )
            request_id_var.reset(token)
