"""The claims profile a token must meet beyond its signature (pure; RFC 7519, RFC 9068).

PyJWT checks ``exp``/``nbf``/``iat`` with ``int(value)``, so ``"exp": "9999999999"`` (a string)
would pass; RFC 7519 section 2 makes them NumericDate, a JSON number. A ``sub`` must name
someone (a non-empty string, what audit rows record), and a ``typ`` header, when present,
must say this is a JWT or an access token (RFC 9068 section 2.1), so an ID token or a
logout token of the same issuer is not taken for an access token by a header that says so.
"""

from __future__ import annotations

from typing import Any

NUMERIC_DATES = ("exp", "nbf", "iat")
ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})


def profile_violation(header: dict[str, Any], claims: dict[str, Any]) -> str | None:
    """What breaks the profile (for the failure metric's reason), or None."""
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
        return "wrong_type"
    for name in NUMERIC_DATES:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            return "invalid_claims"
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        return "invalid_claims"
    return None
