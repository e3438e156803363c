"""Proxy mode's pure parts: gateway path -> upstream path, upstream URL -> gateway URL, headers.

No I/O here. ``StreamRewriter`` rewrites the upstream's absolute URLs (``RetrieveURL``,
``BulkDataURI``, ``Location``...) in a textual body as it streams, chunk by chunk, holding back
at most one unfinished URL between chunks.

BulkDataURIs: the gateway serves bulk data at ``.../instances/{sop}/bulkdata/{path}``, the
upstream wherever it likes under the instance (Orthanc: ``.../instances/{sop}/bulk/{tag}``).
An upstream URL ``.../instances/{sop}/<tail>`` whose tail is not a WADO-RS resource becomes
``.../instances/{sop}/bulkdata/<tail>``, and the gateway forwards ``bulkdata/<tail>`` to
``<tail>``: a bijection whatever the upstream's own layout (``bulkdata/bulkdata/...`` for an
upstream that itself says ``bulkdata``). Clients treat BulkDataURIs as opaque.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus, urlsplit

from novaza_gateway.imaging.errors import InvalidQuery

QIDO_PREFIX = "/med/qido"
WADO_PREFIX = "/med/wado"
STOW_PREFIX = "/med/stow"
WADO_RESOURCES = frozenset({"frames", "rendered", "thumbnail", "metadata"})
_INSTANCE = r"/studies/[^/]+/series/[^/]+/instances/[^/?#]+"
_INSTANCE_TAIL = re.compile(rf"^({_INSTANCE})/([^?#]+)$")
_GATEWAY_BULK = re.compile(rf"^({_INSTANCE})/bulkdata/(.+)$")
SEARCH_ROOTS = frozenset({"studies", "series", "instances"})

# Request headers the upstream sees: what DICOMweb negotiates on, nothing of the caller's
# identity (Authorization, cookies, X-Tenant-ID stay here). The upstream's credentials are
# added by the client; Accept-Encoding is always identity (bytes pass through as stored).
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-charset",
        "content-type",
        "content-length",
        "if-none-match",
        "if-modified-since",
        "x-request-id",
    }
)
# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The upstream's own, not the caller's business (its auth challenge, its cookies, its name).
DROPPED_RESPONSE_HEADERS = frozenset(
    {"server", "date", "set-cookie", "www-authenticate", "alt-svc", "strict-transport-security"}
)
URL_HEADERS = frozenset({"location", "content-location"})
TEXT_MEDIA = ("application/dicom+json", "application/json", "application/dicom+xml")


def upstream_path(gateway_path: str) -> str:
    """The upstream path (relative to its DICOMweb root) a gateway DICOMweb path names."""
    for prefix in (QIDO_PREFIX, WADO_PREFIX, STOW_PREFIX):
        if gateway_path.startswith(prefix + "/"):
            rest = gateway_path[len(prefix) :]
            if prefix == WADO_PREFIX:
                bulk = _GATEWAY_BULK.match(rest)
                if bulk:
                    return f"{bulk.group(1)}/{bulk.group(2)}"
            return rest
    raise ValueError(f"not a DICOMweb path: {gateway_path!r}")


def forwarded_query(query_string: str, *, qido_limit: int | None = None) -> tuple[str, int | None]:
    """The query the upstream gets, as the caller encoded it (servers differ in what they
    decode: Orthanc matches ``*`` but not ``%2A``) - without the signed-URL ``token``.

    For a QIDO search (``qido_limit`` set) the page is capped as in embedded mode: at most
    ``qido_limit`` results, asked as one more so that a cut can be told (``Warning: 299``).
    Answers the raw query and the page size the caller gets (None: not a search).
    """
    kept: list[str] = []
    asked: int | None = None
    for pair in filter(None, query_string.split("&")):
        name = unquote_plus(pair.split("=", 1)[0])
        if name == "token":
            continue
        if qido_limit is not None and name == "limit":
            value = unquote_plus(pair.partition("=")[2])
            if not value.isdigit():
                raise InvalidQuery.field("limit", "a non-negative integer")
            asked = int(value)
            continue
        kept.append(pair)
    if qido_limit is None:
        return "&".join(kept), None
    page = min(asked if asked is not None else qido_limit, qido_limit)
    kept.append(f"limit={page + 1}")
    return "&".join(kept), page


def request_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    kept = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in headers
        if name.decode("latin-1").lower() in FORWARDED_REQUEST_HEADERS
    }
    kept["accept-encoding"] = "identity"
    return kept


def response_headers(
    headers: Iterable[tuple[str, str]], urls: UrlRewriter, *, body_rewritten: bool
) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers as the caller gets them: hop-by-hop headers (and
    those its ``Connection`` names) dropped, URLs rewritten, and the length and encoding
    dropped when the gateway rewrote (and so decoded and resized) the body."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in pairs
        if name == "connection"
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | DROPPED_RESPONSE_HEADERS | named
    if body_rewritten:
        dropped = dropped | {"content-length", "content-encoding", "etag"}
    out = []
    for name, value in pairs:
        if name in dropped:
            continue
        if name in URL_HEADERS:
            value = urls.url(value)
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out


def is_text(content_type: str) -> bool:
    """Whether a response body may carry URLs to rewrite (DICOM JSON and XML, not DICOM)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in TEXT_MEDIA:
        return True
    return media == "multipart/related" and "application/dicom+xml" in content_type.lower()


class UrlRewriter:
    """Upstream URLs -> the gateway's WADO-RS URLs.

    A URL is the upstream's when it starts with the upstream's DICOMweb root as configured,
    or - for a root with a path, as Orthanc's ``/dicom-web`` - when its path continues that
    root with ``/studies``, ``/series`` or ``/instances`` on any host: an upstream configured
    with a public host name of its own (Orthanc's ``DicomWeb.Host``) answers with that name.
    """

    def __init__(self, upstream_base: str, gateway_wado_base: str) -> None:
        self.prefix = upstream_base.rstrip("/")
        self.root_path = urlsplit(self.prefix).path.rstrip("/")
        self.target = gateway_wado_base.rstrip("/")

    def url(self, value: str) -> str:
        rest = self._rest(value)
        if rest is None:
            return value
        tail = _INSTANCE_TAIL.match(rest)
        if tail and tail.group(2).split("/", 1)[0] not in WADO_RESOURCES:
            rest = f"{tail.group(1)}/bulkdata/{tail.group(2)}"
        return self.target + rest

    def _rest(self, value: str) -> str | None:
        if value == self.prefix or value.startswith(self.prefix + "/"):
            return value[len(self.prefix) :]
        if not self.root_path or not value.startswith(("http://", "https://")):
            return None
        parts = urlsplit(value)
        if not parts.path.startswith(self.root_path + "/"):
            return None
        rest = value[len(f"{parts.scheme}://{parts.netloc}") + len(self.root_path) :]
        return rest if rest[1:].split("/", 1)[0] in SEARCH_ROOTS else None


_URL = re.compile(rb"https?://[^\"'<>\s\\]*")
_SCHEMES = (b"https://", b"http://")
MAX_URL_BYTES = 8192


def _partial_scheme(tail: bytes) -> int:
    """Length of the longest suffix of ``tail`` that could begin an ``http(s)://``."""
    for size in range(min(len(tail), 7), 0, -1):
        suffix = tail[-size:]
        if any(scheme.startswith(suffix) for scheme in _SCHEMES):
            return size
    return 0


class StreamRewriter:
    """Rewrites URLs in a body fed chunk by chunk; bounded memory (one URL held back)."""

    def __init__(self, urls: UrlRewriter) -> None:
        self._urls = urls
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        out = bytearray()
        pos = 0
        for match in _URL.finditer(data):
            if match.end() == len(data) and len(data) - match.start() <= MAX_URL_BYTES:
                out += data[pos : match.start()]
                self._pending = data[match.start() :]  # the URL may go on in the next chunk
                return bytes(out)
            out += data[pos : match.start()]
            out += self._rewrite(match.group())
            pos = match.end()
        tail = data[pos:]
        keep = _partial_scheme(tail)
        self._pending = tail[len(tail) - keep :] if keep else b""
        out += tail[: len(tail) - keep]
        return bytes(out)

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        if _URL.fullmatch(data):
            return self._rewrite(data)
        return data

    def rewrite_all(self, body: bytes) -> bytes:
        return self.feed(body) + self.flush()

    def _rewrite(self, url: bytes) -> bytes:
        text = url.decode("ascii", "surrogateescape")
        return self._urls.url(text).encode("ascii", "surrogateescape")
