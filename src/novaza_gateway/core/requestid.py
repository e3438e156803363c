"""Request ids: the gateway's own (128 random bits, every request) and the caller's
``X-Request-Id`` when it is safe to echo.

The gateway's id is the request's identity in log lines and audit rows (a caller cannot pick
it, so it cannot make two requests' records collide); the caller's id is kept beside it
(``callerRequestId``, ``caller_request_id``) for the caller's own correlation.
``core.frontdoor`` answers ``X-Request-Id`` (the caller's id when it sent a valid one, else the
gateway's) and ``X-API-Version`` on every response, including 404, 405, 429 and crashes.
"""

from __future__ import annotations

import os
import random
import re

from starlette.types import Scope

# 128 bits per id from a generator seeded once from the OS: as unique as uuid4, without a
# getrandom() system call per request. An id correlates log lines; it guards nothing.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))  # no twin sequences
_VALID_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
# Scope key: headers a layer inside wants on the response whoever answers (the guard's
# rate-limit headers); the front door adds them to ``http.response.start``.
RESPONSE_HEADERS = "novaza.response_headers"


def caller_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's ``X-Request-Id`` when it is safe to echo (``[A-Za-z0-9._-]{1,128}``)."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _VALID_ID.match(value) else None
    return None


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"
