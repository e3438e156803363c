"""Every error code the gateway can emit is in docs/errors.md, and docs/errors.md lists no code
that no longer exists (ADR 0009).

Codes come from four places: every ``ApiError`` subclass of every module (all imported first),
the framework handlers in core/errors.py (exercised through a real app: 404, 405, malformed
JSON, a body that is not UTF-8, a body too large, invalid fields, control characters), code
literals in the source (``code = "..."``, ``code="..."``, ``"code": "..."``), and the codes
each route declares in its OpenAPI responses.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import novaza_gateway
from novaza_gateway.core.errors import ApiError
from tests.conftest import Gateway

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "errors.md"
SOURCE = Path(novaza_gateway.__file__).parent
_ROW = re.compile(r"^\|\s*[^|]+\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", re.MULTILINE)
# a code given as a whole value (not ``code = "AE" if error else "AA"``, an HL7 ACK code)
_LITERAL = re.compile(
    r"""(?:\bcode\s*=\s*|["']code["']\s*:\s*)["']([A-Z][A-Z0-9_]+)["']\s*(?:$|[,)}])""",
    re.MULTILINE,
)
_DECLARED = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\b[A-Z]{4,}\b")


def documented() -> set[str]:
    return set(_ROW.findall(DOCS.read_text()))


def subclass_codes() -> set[str]:
    for module in pkgutil.walk_packages(novaza_gateway.__path__, "novaza_gateway."):
        if ".migrations" not in module.name:  # Alembic's scripts run only under Alembic
            importlib.import_module(module.name)
    codes, pending = set(), [ApiError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending += cls.__subclasses__()
    return codes


def literal_codes() -> set[str]:
    codes: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        codes.update(_LITERAL.findall(path.read_text()))
    return codes


def declared_codes(openapi: dict[str, object]) -> set[str]:
    """UPPER_SNAKE words of each route's "Error codes: ..." response descriptions."""
    codes: set[str] = set()
    for item in openapi["paths"].values():  # type: ignore[attr-defined]
        for operation in item.values():
            for response in operation.get("responses", {}).values():
                text = response.get("description", "")
                if text.startswith("Error codes:"):
                    codes.update(_DECLARED.findall(text.removeprefix("Error codes:")))
    return codes


async def handler_codes(gw: Gateway) -> set[str]:
    """The framework's refusals as the handlers render them, through a real app."""
    await gw.create_tenant("acme", addons=["medical_imaging"])
    auth = gw.auth("acme")
    json = {**auth, "Content-Type": "application/json"}
    client = gw.client
    answers = [
        await client.get("/no/such/route"),
        await client.delete("/api/v1/whoami", headers=auth),
        await client.post("/med/personeo/room", content=b'{"encounter": ', headers=json),
        await client.post("/med/personeo/room", content=b'{"encounter": "\xff"}', headers=json),
        await client.post("/med/personeo/room", content=b"{" + b" " * 70_000, headers=json),
        await client.post("/med/personeo/room", json={"encounter": ""}, headers=auth),
        await client.post("/med/personeo/room", content=b'{"e": "\\u0000"}', headers=json),
        await client.get("/med/imaging/study/%00", headers=auth),
        await client.get("/med/imaging/study/1.2.x", headers=auth),
        await client.get("/api/v1/whoami"),
    ]
    codes = set()
    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        codes.add(answer.json()["code"])
    return codes


def test_the_docs_table_parses() -> None:
    assert {"UNAUTHENTICATED", "VALIDATION_FAILED", "INTERNAL"} <= documented()


def test_every_error_class_and_literal_code_is_documented() -> None:
    emitted = subclass_codes() | literal_codes()
    assert "STUDY_NOT_FOUND" in emitted and "HL7_REJECTED" in emitted  # areas were imported
    missing = emitted - documented()
    assert not missing, f"codes missing from docs/errors.md: {sorted(missing)}"


def test_the_docs_list_no_code_that_no_longer_exists() -> None:
    gone = documented() - subclass_codes() - literal_codes()
    assert not gone, f"documented but emitted nowhere: {sorted(gone)}"


async def test_the_handlers_and_every_route_declare_documented_codes(gw: Gateway) -> None:
    answered = await handler_codes(gw)
    assert {
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "MALFORMED_BODY",
        "PAYLOAD_TOO_LARGE",
        "VALIDATION_FAILED",
        "INVALID_CHARACTERS",
        "INVALID_UID",
        "UNAUTHENTICATED",
    } <= answered
    declared = declared_codes(gw.app.openapi())
    assert "QC_CONFLICT" in declared
    missing = (answered | declared) - documented()
    assert not missing, f"codes missing from docs/errors.md: {sorted(missing)}"
