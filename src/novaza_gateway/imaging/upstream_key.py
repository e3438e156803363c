"""The normal form of an upstream DICOMweb root, so that no alias lets two tenants share one.

A server is reached by many spellings: ``localhost``, ``127.1``, ``0x7f000001``, ``[::1]``,
``0.0.0.0`` (which connects to this host), this machine's own name or address, a name that
resolves to any of those; a path with ``%64`` for ``d``, ``%2F`` for ``/``, ``//``, ``./`` and
``../`` segments. Comparison is on (addresses, port, path) after RFC 3986 normalization
(scheme and host case-insensitive, one percent-decoding, dot segments and duplicate slashes
removed) plus what the connection really reaches: every address a name resolves to, with
loopback, unspecified and this host's own addresses counted as one ``local`` host. Path case
is folded too: a server that ignores case (IIS, some PACS) would otherwise be shared; two
tenants on paths differing only in case are refused, which errs on the safe side.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
LOCAL = "local"
RESOLVE_TTL_SECONDS = 300.0
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")
_resolved: dict[str, tuple[frozenset[str], float]] = {}


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    """What identifies a DICOMweb server: the hosts it is reached at, its port, its root."""

    hosts: frozenset[str]
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> UpstreamKey:
        # WHATWG URL parsing (browsers, the url crate under pydantic) reads "\\" as "/".
        parts = urlsplit(url.strip().replace("\\", "/"))
        scheme = parts.scheme.lower()
        try:
            port = parts.port or DEFAULT_PORTS.get(scheme, 80)
        except ValueError:  # a port out of range: never reachable, so its own key
            port = -1
        return cls(host_identities(parts.hostname or ""), port, normal_path(parts.path))

    def clashes(self, other: UpstreamKey) -> bool:
        if self.port != other.port or not (self.hosts & other.hosts):
            return False
        mine, theirs = self.path + "/", other.path + "/"
        return mine.startswith(theirs) or theirs.startswith(mine)


def normal_path(path: str) -> str:
    """One percent-decoding, ``\\`` as ``/``, no dot segments or empty segments, lower case,
    no trailing slash ("" for the root)."""
    segments: list[str] = []
    for segment in unquote(path).replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment.lower())
    return "/" + "/".join(segments) if segments else ""


def host_identities(host: str) -> frozenset[str]:
    """Every identity the host is reached at: ``local`` for this machine, else addresses
    (and the name itself, so an unresolvable name still equals its own spelling)."""
    name = host.strip("[]").lower().rstrip(".")
    address = ip_literal(name)
    if address is not None:
        return frozenset({address})
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return frozenset({LOCAL})
    return frozenset({name}) | resolve(name)


def ip_literal(name: str) -> str | None:
    """The canonical address of an IP literal (legacy IPv4 forms such as ``127.1`` and
    ``2130706433`` included, as ``inet_aton`` and browsers accept them); None for a name."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if not _LEGACY_IPV4.match(name):
            return None
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return canonical(address)


def canonical(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or str(address) in own_addresses():
        return LOCAL
    return str(address)


def resolve(name: str) -> frozenset[str]:
    """The addresses a name resolves to, cached for a few minutes (settings saves and the
    proxy's owner table ask again every few seconds; DNS answers change rarely)."""
    cached = _resolved.get(name)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        found: frozenset[str] = frozenset()
    else:
        found = frozenset(
            canonical(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos
        )
    _resolved[name] = (found, time.monotonic() + RESOLVE_TTL_SECONDS)
    return found


_own: tuple[frozenset[str], float] = (frozenset(), 0.0)


def own_addresses() -> frozenset[str]:
    """This host's own addresses: a server bound to all interfaces answers on each."""
    global _own
    addresses, expires = _own
    if expires > time.monotonic():
        return addresses
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP)
        addresses = frozenset(str(info[4][0]).split("%")[0] for info in infos)
    except OSError:
        addresses = frozenset()
    _own = (addresses, time.monotonic() + RESOLVE_TTL_SECONDS)
    return addresses
