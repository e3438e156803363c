"""How proxy mode answers an upstream's failure: the envelope, the right status, no body of
the upstream's (its error text may name hosts, paths or patients), never a stack trace."""

from __future__ import annotations

import httpx

from novaza_gateway.core.errors import (
    ApiError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from novaza_gateway.imaging.errors import (
    InstanceNotFound,
    NotAcceptable,
    SeriesNotFound,
    StudyNotFound,
    UpstreamUnavailable,
)

CREDENTIALS = (
    "The imaging archive refused the gateway's credentials for this tenant; an operator "
    "must correct imaging.upstreamUsername / upstreamPassword in the tenant settings."
)
NOT_FOUND_AT: dict[str, type[NotFound]] = {
    "study": StudyNotFound,
    "series": SeriesNotFound,
    "instance": InstanceNotFound,
}


def transport_error(exc: httpx.HTTPError) -> UpstreamUnavailable:
    """No answer: refused or broken connection 502, timeout 504, our own pool full 503."""
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamUnavailable(
            "Too many requests to the imaging archive are in flight; retry later.",
            status=503,
            reason="busy",
        )
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamUnavailable(
            "The imaging archive did not answer in time.", status=504, reason="timeout"
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(
            "The imaging archive could not be reached.", status=502, reason="connect_failed"
        )
    return UpstreamUnavailable(
        "The connection to the imaging archive broke.", status=502, reason="broken"
    )


def status_error(status: int, kind: str, level: str | None = None) -> ApiError:
    """An upstream's non-success answer as the gateway's envelope. A 404 names the level
    of the resource the path addressed (``STUDY_NOT_FOUND``...), else ``NOT_FOUND``."""
    if status in (401, 403, 407):
        return UpstreamUnavailable(
            CREDENTIALS, status=502, reason="credentials_rejected", upstream_status=status
        )
    if status == 404:
        found = NOT_FOUND_AT.get(level or "")
        if found is not None:
            return found()
        return NotFound("The imaging archive has no such resource.")
    if status == 400:
        return ValidationFailed(
            "The imaging archive rejected the request as malformed.",
            details={"errors": [{"path": "query", "reason": "rejected by the archive"}]},
        )
    if status == 406:
        return NotAcceptable()
    if status == 409:
        return Conflict("The imaging archive refused the request as conflicting.")
    if status == 413:
        return PayloadTooLarge("The imaging archive refused the request body as too large.")
    if status == 415:
        return UnsupportedMediaType("The imaging archive does not take this media type.")
    if status in (429, 503):
        return UpstreamUnavailable(
            "The imaging archive is busy; retry later.",
            status=503,
            reason="busy",
            upstream_status=status,
        )
    if status == 504:
        return UpstreamUnavailable(
            "The imaging archive timed out.", status=504, reason="timeout", upstream_status=status
        )
    reason = "upstream_error" if status >= 500 else "unexpected_answer"
    return UpstreamUnavailable(
        f"The imaging archive failed ({kind.upper()} answered {status}).",
        status=502,
        reason=reason,
        upstream_status=status,
    )
