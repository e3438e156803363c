"""The error tree and the one envelope renderer.

Every non-2xx answer is ``{"code", "message", "details"?}``. Services raise an ``ApiError``
subclass; the handlers here (and the ASGI helpers for middleware) render it. Codes are stable
API and are listed in ``docs/errors.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

from novaza_gateway.core import dberrors
from novaza_gateway.core.requestid import route_template

log = logging.getLogger("novaza.errors")


class ApiError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "The gateway failed to handle the request."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = dict(details) if details else None
        self.headers = dict(headers) if headers else {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class Unauthenticated(ApiError):
    status = 401
    code = "UNAUTHENTICATED"
    default_message = "A valid bearer token is required."

    def __init__(self, message: str | None = None, *, reason: str = "invalid_token") -> None:
        # The reason feeds metrics and logs; the caller only learns the token is not good.
        self.reason = reason
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"
    default_message = "The token does not grant this operation."


class TenantUnknown(ApiError):
    status = 403
    code = "TENANT_UNKNOWN"
    default_message = "The tenant is not known to the gateway."


class TenantSuspended(ApiError):
    status = 403
    code = "TENANT_SUSPENDED"
    default_message = "The tenant is suspended."


class TenantInactive(ApiError):
    status = 403
    code = "TENANT_INACTIVE"
    default_message = "The tenant is not active yet."


class AddonRequired(ApiError):
    status = 403
    code = "ADDON_REQUIRED"
    default_message = "The tenant's subscription does not include the add-on this needs."

    def __init__(self, addon: str) -> None:
        super().__init__(f"This operation needs the '{addon}' add-on.", details={"addon": addon})


class NotFound(ApiError):
    status = 404
    code = "NOT_FOUND"
    default_message = "No such resource."


class MethodNotAllowed(ApiError):
    status = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "The resource does not support this method."


class Conflict(ApiError):
    status = 409
    code = "CONFLICT"
    default_message = "The request conflicts with the resource's current state."


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "The request body is too large."


class UnsupportedMediaType(ApiError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "The request's content type is not supported here."


class ValidationFailed(ApiError):
    status = 422
    code = "VALIDATION_FAILED"
    default_message = "The request is not valid."

    @classmethod
    def field(cls, path: str, reason: str) -> ValidationFailed:
        return cls(f"{path}: {reason}", details={"errors": [{"path": path, "reason": reason}]})


# Refused at the edge, before any route code or database call (ADR 0007, docs/security.md).
class InvalidCharacters(ApiError):
    status = 400
    code = "INVALID_CHARACTERS"
    default_message = "The request holds control characters where none are allowed."

    def __init__(self, where: str, parameter: str | None = None) -> None:
        details = {"in": where} if parameter is None else {"in": where, "parameter": parameter}
        named = f" {parameter!r}" if parameter else ""
        super().__init__(f"Control characters in {where}{named}.", details=details)


class InvalidUid(ValidationFailed):
    """A DICOM UID that breaks PS3.5 9.1 (digits and dots, at most 64): 400, as DICOMweb
    answers a malformed request; raised through the validation handler (core.params)."""

    status = 400
    code = "INVALID_UID"
    default_message = "A DICOM UID is up to 64 characters of digits and dots."


class MalformedBody(ApiError):
    status = 400
    code = "MALFORMED_BODY"
    default_message = "The request body could not be parsed."


class RateLimited(ApiError):
    status = 429
    code = "RATE_LIMITED"
    default_message = "Too many requests for this tenant; retry later."

    def __init__(self, retry_after_seconds: int, headers: Mapping[str, str]) -> None:
        super().__init__(
            details={"retryAfterSeconds": retry_after_seconds},
            headers={**headers, "Retry-After": str(retry_after_seconds)},
        )


class AuthFailuresLimited(RateLimited):
    """An address past its budget of failed authentications (core.authlimit)."""

    default_message = "Too many failed authentications from this address; retry later."


# Answered by the HTTP server itself, before any route (core.httpserver); the connection closes.
class RequestTimeout(ApiError):
    status = 408
    code = "REQUEST_TIMEOUT"
    default_message = "The request was not received in time."


class HeadersTooLarge(ApiError):
    status = 431
    code = "HEADERS_TOO_LARGE"
    default_message = "The request's header section is too large."


class ServerBusy(ApiError):
    status = 503
    code = "SERVER_BUSY"
    default_message = "The gateway holds as many connections as it takes; retry shortly."


class UpstreamUnavailable(ApiError):
    code = "UPSTREAM_UNAVAILABLE"
    default_message = "An upstream service did not answer."

    def __init__(self, message: str | None = None, *, status: int = 502) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # 502, 503 or 504 per failure


class Internal(ApiError):
    pass


class DatabaseUnavailable(UpstreamUnavailable):
    default_message = "The database is unavailable; retry later."

    def __init__(self, fault: dberrors.DbFault) -> None:
        super().__init__(status=503)
        self.details = {"reason": fault.reason}
        self.headers["Retry-After"] = str(fault.retry_after_seconds)


class InvalidInput(ApiError):
    """A value the edge validation let through and the database refused (backstop): the
    answer names the kind of fault, never the value."""

    status = 422
    code = "INVALID_INPUT"
    default_message = "A value in the request cannot be stored (too long, out of range or invalid)."

    def __init__(self, fault: dberrors.DbFault) -> None:
        super().__init__(details={"reason": fault.reason})


# --------------------------------------------------------------------------- rendering


def render(error: ApiError) -> Response:
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


async def send_error(send: Send, error: ApiError) -> None:
    """Answer from ASGI middleware, before any route ran."""
    headers = [(b"content-type", b"application/json")]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    body = orjson.dumps(error.body())
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: MalformedBody,  # FastAPI: a body it could not read (not UTF-8, a broken form)
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}
# FastAPI's error type for a body that is not JSON (syntax, truncation): a malformed request,
# not a field's invalid value.
_JSON_INVALID = "json_invalid"


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body",)]
        errors.append({"path": ".".join(loc) or "body", "reason": str(err.get("msg", ""))})
    return errors


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return render(exc)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    types = {err.get("type") for err in exc.errors()}
    if _JSON_INVALID in types:
        return render(MalformedBody("The request body is not valid JSON."))
    errors = _validation_errors(exc)
    first = errors[0] if errors else {"path": "body", "reason": "invalid"}
    cls = InvalidUid if InvalidUid.code in types else ValidationFailed
    return render(cls(f"{first['path']}: {first['reason']}", details={"errors": errors}))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cls = _STATUS_ERRORS.get(exc.status_code)
    if cls is None:  # no framework layer we run raises another status: a bug, not an answer
        log.error("unmapped framework status", extra={"status": exc.status_code})
        return render(Internal())
    return render(cls(headers=exc.headers))


def classify(exc: Exception) -> ApiError:
    """An unexpected exception as the caller should see it: a lost store is 503, not 500."""
    if isinstance(exc, ApiError):
        return exc
    fault = dberrors.classify(exc)
    if fault is None:
        return Internal()
    if fault.kind == "invalid_input":
        return InvalidInput(fault)
    return DatabaseUnavailable(fault)


def log_failure(exc: Exception, error: ApiError, route: str) -> None:
    """One line per failed request. Never the exception's message: database messages embed
    the values they refused (docs/security.md, "No PHI in logs")."""
    if isinstance(error, Internal):
        log.exception("unhandled error", extra={"route": route, **dberrors.log_fields(exc)})
    elif isinstance(error, InvalidInput):
        log.warning("database refused a value", extra={"route": route, **dberrors.log_fields(exc)})
    else:
        log.error("dependency failed", extra={"route": route, **dberrors.log_fields(exc)})


async def _storage_error(request: Request, exc: Exception) -> Response:
    error = classify(exc)
    log_failure(exc, error, route_template(request.scope))
    return render(error)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DBAPIError, _storage_error)
    app.add_exception_handler(PoolTimeoutError, _storage_error)
    app.add_exception_handler(TimeoutError, _storage_error)
    app.add_exception_handler(ConnectionError, _storage_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
