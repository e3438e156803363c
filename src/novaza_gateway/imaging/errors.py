"""The imaging area's errors: each carries its HTTP status and stable code (docs/errors.md)."""

from __future__ import annotations

from novaza_gateway.core.errors import (
    ApiError,
    Conflict,
    NotFound,
    UnsupportedMediaType,
    ValidationFailed,
)


class StudyNotFound(NotFound):
    code = "STUDY_NOT_FOUND"
    default_message = "No study with this Study Instance UID in this tenant."


class SeriesNotFound(NotFound):
    code = "SERIES_NOT_FOUND"
    default_message = "No series with this Series Instance UID in this study."


class InstanceNotFound(NotFound):
    code = "INSTANCE_NOT_FOUND"
    default_message = "No instance with this SOP Instance UID in this series."


class FrameNotFound(NotFound):
    code = "FRAME_NOT_FOUND"
    default_message = "The instance has no such frame."


class BulkDataNotFound(NotFound):
    code = "BULKDATA_NOT_FOUND"
    default_message = "The instance has no bulk data at this path."


class NotMultipart(UnsupportedMediaType):
    code = "DICOM_MULTIPART_REQUIRED"
    default_message = 'STOW-RS takes multipart/related; type="application/dicom" with a boundary.'


class MalformedMultipart(ApiError):
    status = 400
    code = "DICOM_MULTIPART_MALFORMED"
    default_message = "The multipart body is not well-formed."


class NotAcceptable(ApiError):
    status = 406
    code = "NOT_ACCEPTABLE"
    default_message = "The resource cannot be returned in any media type the Accept header allows."


class FramesUnavailable(NotAcceptable):
    code = "FRAMES_UNAVAILABLE"
    default_message = "Frames are served for native (uncompressed, little-endian) pixel data only."


class RenderingUnavailable(NotAcceptable):
    code = "RENDERING_UNAVAILABLE"
    default_message = "This instance cannot be rendered as an image by the gateway."


class InvalidQuery(ValidationFailed):
    """A QIDO parameter the gateway cannot match on, or a malformed value."""


class SignedUrlInvalid(ApiError):
    status = 401
    code = "UNAUTHENTICATED"
    default_message = "The signed URL token is expired, tampered with, or not issued here."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class SignedUrlScope(ApiError):
    status = 403
    code = "FORBIDDEN"
    default_message = "The signed URL does not grant access to this resource."


class QcConflict(Conflict):
    code = "QC_CONFLICT"
    default_message = "QC of this study was already confirmed with another result."


class PatientNotFound(NotFound):
    code = "PATIENT_NOT_FOUND"
    default_message = "No patient with this id or identifier in this tenant."


# -- proxy mode (the tenant's images live on an upstream DICOMweb server)


class UpstreamUnavailable(ApiError):
    """The tenant's upstream archive failed: 502 (refused, broken, 5xx, bad credentials),
    503 (busy), 504 (timed out). ``details.reason`` says which; never the upstream's body."""

    status = 502
    code = "UPSTREAM_UNAVAILABLE"
    default_message = "The imaging archive upstream of the gateway did not answer."

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int = 502,
        reason: str,
        upstream_status: int | None = None,
    ) -> None:
        details: dict[str, object] = {"reason": reason}
        if upstream_status is not None:
            details["upstreamStatus"] = upstream_status
        super().__init__(message, details=details)
        self.status = status  # type: ignore[misc]


class UpstreamShared(ApiError):
    status = 409
    code = "IMAGING_UPSTREAM_SHARED"
    default_message = (
        "This tenant's imaging upstream is also configured for another tenant; the gateway "
        "does not use an archive shared by two tenants. An operator must correct the "
        "tenant settings."
    )


class UpstreamMisconfigured(ApiError):
    status = 503
    code = "UPSTREAM_UNAVAILABLE"
    default_message = "The tenant's imaging settings name no usable upstream archive."

    def __init__(self) -> None:
        super().__init__(details={"reason": "misconfigured"})


# -- the embedded archive's store (ADR 0037)


class ArchiveFileMissing(ApiError):
    """The index lists the instance but the archive store has no file for it (or a shorter
    one): data lost or a store not shared by every replica. Found before an answer starts."""

    status = 500
    code = "ARCHIVE_FILE_MISSING"
    default_message = (
        "An instance is indexed but its file is not in the archive store; an operator must "
        "restore it."
    )


class ArchiveStoreUnavailable(UpstreamUnavailable):
    default_message = "The gateway's archive store did not answer; retry later."

    def __init__(self) -> None:
        super().__init__(status=503, reason="archive_store")
