"""Bad input stops at the edge with a 4xx in the envelope: control characters in paths,
queries and JSON strings, out-of-range numbers and instants, over-long UIDs; audit rows never
overflow. The issue's examples, then every route with parameters against a table of attacks,
on SQLite and PostgreSQL (ADRs 0007, 0008)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import select

from novaza_gateway.core import audit
from novaza_gateway.core.controlchars import JsonScan, json_control_escape, refused
from novaza_gateway.core.pagination import decode_cursor, encode_cursor
from novaza_gateway.core.params import bounded_int, in_range, is_dicom_uid
from tests.conftest import ALL_TENANT_SCOPES, Gateway, gateway_settings, start_gateway

ADDONS = ["medical_imaging", "emr", "hl7_fhir"]


@pytest.fixture
async def edge(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    async for gw in start_gateway(gateway_settings(tmp_path / "data", db_url)):
        # no throttling: the route walk sends a few thousand requests
        limit = {"ratePerSecond": 100_000, "burst": 1_000_000}
        await gw.create_tenant("acme", addons=ADDONS, rateLimit=limit)
        yield gw


def headers(gw: Gateway) -> dict[str, str]:
    """Every tenant scope and platform:admin: no route refuses the caller before its input."""
    token = gw.token("acme", f"{ALL_TENANT_SCOPES} platform:admin")
    return {"Authorization": f"Bearer {token}"}


def envelope(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["code"] == code and body["message"], body
    assert answer.headers["x-request-id"] and answer.headers["x-api-version"] == "1.0"
    return body


# ----------------------------------------------------------------------------- the pure parts


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (rb'{"a": "x"}', False),
        (rb'{"a": "\u0000"}', True),
        (rb'{"a": "\u001F"}', True),
        (rb'{"a": "\u001f"}', True),
        (rb'{"a": "\b"}', True),
        (rb'{"a": "\f"}', True),
        (rb'{"a": "line\nbreak\ttab\rcr"}', False),
        (rb'{"a": "\u0009\u000a\u000A\u000d\u000D"}', False),
        (rb'{"a": "\\u0000"}', False),  # an escaped backslash, then the text u0000
        (rb'{"a": "\\\u0000"}', True),  # an escaped backslash, then a NUL
        (rb'{"a": "\\\\u0000"}', False),
        (rb'{"a": "C:\\bin\\file"}', False),
        (rb'{"a": "\u0020\u007f\u00e9"}', False),  # space, DEL and e-acute are not C0
        (rb'{"a": "\"\u0000"}', True),
    ],
)
def test_json_control_escapes(text: bytes, found: bool) -> None:
    assert json_control_escape(text) is found
    # whatever the chunking, the streaming scan says the same
    for cut in range(1, len(text)):
        scan = JsonScan()
        assert (scan.feed(text[:cut]) or scan.feed(text[cut:])) is found, cut


def test_the_scan_keeps_a_long_backslash_run_across_chunks() -> None:
    text = b'{"a": "' + b"\\" * 1000 + b'u0000"}'  # 1000: escaped backslashes, then text
    for cut in (8, 500, 1006, 1007, 1008, 1010):
        scan = JsonScan()
        assert not (scan.feed(text[:cut]) or scan.feed(text[cut:])), cut
    odd = b'{"a": "' + b"\\" * 1001 + b'u0000"}'
    for cut in (8, 500, 1007, 1008, 1009, 1011):
        scan = JsonScan()
        assert scan.feed(odd[:cut]) or scan.feed(odd[cut:]), cut


@pytest.mark.parametrize(
    ("path", "query", "where", "parameter"),
    [
        ("/x/\x00", b"", "path", "id"),
        ("/x/a\x7fb", b"", "path", "id"),
        ("/x/ok", b"a=%00", "query", "a"),
        ("/x/ok", b"a=1&PatientName=x%0Ay", "query", "PatientName"),
        ("/x/ok", b"a=%7f", "query", "a"),
        ("/x/ok", b"n%01=1", "query", "n\\x01"),
        ("/x/ok", b"a=\x1f", "query", "a"),
        ("/x/ok", b"a=%250a&b=%C3%A9+%20", None, None),  # the text "%0a", e-acute, spaces
        ("/x/\u00e9\u00a0", b"", None, None),  # not printable, but no control
    ],
)
def test_paths_and_queries_are_checked_decoded(
    path: str, query: bytes, where: str | None, parameter: str | None
) -> None:
    error = refused({"path": path, "query_string": query, "path_params": {"id": path[3:]}})
    if where is None:
        assert error is None
    else:
        assert error is not None and error.status == 400
        assert error.details == {"in": where, "parameter": parameter}


def test_shared_bounds() -> None:
    assert bounded_int("offset", "2147483647", 0, 2**31 - 1) == 2**31 - 1
    for bad in ("9223372036854775808", "9" * 5000, "\u00b2", "-1", "1.5", "", "--5"):
        with pytest.raises(Exception, match="offset"):
            bounded_int("offset", bad, 0, 2**31 - 1)
    assert bounded_int("n", "-12", -100, 100) == -12
    assert is_dicom_uid("1.2.840.10008.5.1.4.1.1.2") and is_dicom_uid("1." + "2" * 62)
    for bad in ("1." + "2" * 63, "1.2.abc", "1..2", ".1", "1.", "", "1.2.\u0663"):
        assert not is_dicom_uid(bad), bad
    assert in_range(datetime(2024, 1, 1)) and in_range(datetime(1, 1, 2, tzinfo=UTC))
    for extreme in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01"):
        assert not in_range(datetime.fromisoformat(extreme)), extreme


def raw_cursor(position: bytes) -> str:
    """A cursor as a caller could forge it (``encode_cursor`` refuses what orjson cannot
    write; orjson reads integers past 2^64 as floats)."""
    return base64.urlsafe_b64encode(position).decode().rstrip("=")


def test_cursors_hold_only_storable_keys() -> None:
    assert decode_cursor(encode_cursor("2024-01-01T00:00:00+00:00", "id"), 2)
    for position in (
        [2**63, "x"],
        ["\x00", "x"],
        ["0001-01-01T00:00:00+14:00", "x"],
        ["y" * 600, "x"],
        [True, "x"],
    ):
        with pytest.raises(Exception, match="cursor"):
            decode_cursor(encode_cursor(*position), 2)
    with pytest.raises(Exception, match="cursor"):
        decode_cursor(raw_cursor(b"[18446744073709551616, 1]"), 2)


# ----------------------------------------------------------------------------- the examples


async def test_the_issue_examples_are_4xx(edge: Gateway) -> None:
    auth = headers(edge)
    for path, parameter in (
        ("/med/imaging/study/%00", "study_uid"),
        ("/med/patient/%00/studies", "patient_id"),
        ("/med/desk/contacts/ext:%00", "contactID"),
        ("/med/wado/studies/1.2/series/1.3%01/metadata", "series"),
    ):
        answer = await edge.client.get(path, headers=auth)
        body = envelope(answer, 400, "INVALID_CHARACTERS")
        assert body["details"] == {"in": "path", "parameter": parameter}, path
    answer = await edge.client.get("/med/qido/studies?PatientName=%00", headers=auth)
    assert envelope(answer, 400, "INVALID_CHARACTERS")["details"] == {
        "in": "query",
        "parameter": "PatientName",
    }
    # before authentication, and on an unknown route too
    assert (await edge.client.get("/med/imaging/study/%00")).status_code == 400
    envelope(await edge.client.get("/no/such/%7f"), 400, "INVALID_CHARACTERS")


async def test_json_strings_with_controls_are_refused_before_parsing(edge: Gateway) -> None:
    auth = {**headers(edge), "Content-Type": "application/json"}
    for body in (
        b'{"encounter": "V1\\u0000"}',
        b'{"encounter": "V1", "displayName": "a\\u001bb"}',
        b'{"encounter": "V1", "members": ["\\b"]}',
    ):
        answer = await edge.client.post("/med/personeo/room", content=body, headers=auth)
        assert envelope(answer, 400, "INVALID_CHARACTERS")["details"] == {"in": "body"}
    # TAB, LF, CR are text; an unknown encounter is the service's own 404
    fine = b'{"encounter": "V1", "displayName": "a\\tb\\nc\\r"}'
    answer = await edge.client.post("/med/personeo/room", content=fine, headers=auth)
    envelope(answer, 404, "ENCOUNTER_NOT_FOUND")
    # tenant settings: free-form JSON, scanned all the same
    answer = await edge.client.put(
        "/admin/tenants/acme",
        content=b'{"settings": {"desk": {"x": "\\u0000"}}}',
        headers={**edge.admin(), "Content-Type": "application/json"},
    )
    envelope(answer, 400, "INVALID_CHARACTERS")


async def test_malformed_bodies_have_a_documented_code(edge: Gateway) -> None:
    auth = {**headers(edge), "Content-Type": "application/json"}
    for body in (b'{"encounter": ', b'{"encounter": "\xff"}', b'{"encounter": "a\x00b"}'):
        answer = await edge.client.post("/med/personeo/room", content=body, headers=auth)
        envelope(answer, 400, "MALFORMED_BODY")


async def test_ranges_are_checked_before_use(edge: Gateway) -> None:
    auth = headers(edge)
    for path in (
        "/med/qido/studies?offset=9223372036854775808",
        "/med/qido/studies?offset=" + "9" * 5000,
        "/med/qido/studies?limit=%C2%B2",
        "/med/qido/series?SeriesNumber=99999999999999999999",
        "/med/qido/instances?InstanceNumber=--5",
        "/med/imaging/worklist?scheduledFrom=0001-01-01T00:00:00%2B14:00",
        "/med/imaging/worklist?scheduledTo=9999-12-31T23:59:59-14:00",
        "/med/desk/contacts?updatedSince=0001-01-01T00:00:00%2B14:00",
        "/med/desk/contacts?updatedSince=9999-12-31T23:59:59-14:00",
        "/api/v1/billing/usage?from=0001-01-01T00:00:00%2B14:00",
        "/api/v1/billing/usage?to=9999-12-31T23:59:59-14:00",
        "/api/v1/billing/usage?from=9999-12-31T23:30:00Z",
        "/admin/tenants/acme/audit?from=0001-01-01T00:00:00%2B14:00",
        "/admin/tenants/acme/audit?to=9999-12-31T23:59:59-14:00",
        "/med/imaging/worklist?cursor=" + raw_cursor(b'[18446744073709551616, "x"]'),
        "/api/v1/billing/invoices?cursor=" + raw_cursor(b"[18446744073709551616]"),
        "/api/v1/billing/invoices?cursor=" + encode_cursor(2**63),
        "/admin/tenants/?cursor=" + encode_cursor("a\x00"),
        "/med/desk/contacts?cursor=" + encode_cursor("0001-01-01T00:00:00+14:00", "x"),
        "/med/wado/studies/1.2/series/1.3/instances/1.4/frames/99999999999999999999/rendered",
        "/med/wado/studies/1.2/series/1.3/instances/1.4/frames/1,\u00b2",
    ):
        answer = await edge.client.get(path, headers=auth)
        envelope(answer, 422, "VALIDATION_FAILED")
    # the bounds themselves are served
    answer = await edge.client.get(
        "/med/imaging/worklist?scheduledFrom=0001-01-02T00:00:00Z&scheduledTo=9999-12-30T00:00:00Z",
        headers=auth,
    )
    assert answer.status_code == 200, answer.text


async def test_uids_are_dicom_uids(edge: Gateway) -> None:
    auth = headers(edge)
    for uid in ("1" * 4001, "1." + "2" * 63, "1.2.abc", "1..2"):
        for path in (
            f"/med/imaging/study/{uid}",
            f"/med/wado/studies/{uid}/metadata",
            f"/med/qido/studies/{uid}/series",
            f"/med/imaging/worklist?studyInstanceUID={uid}",
        ):
            answer = await edge.client.get(path, headers=auth)
            envelope(answer, 400, "INVALID_UID")
    answer = await edge.client.get("/med/imaging/study/1." + "2" * 62, headers=auth)
    envelope(answer, 404, "STUDY_NOT_FOUND")


async def test_proxied_dicomweb_paths_are_held_to_the_same_types(edge: Gateway) -> None:
    """Proxy mode forwards before FastAPI reads parameters: the switch checks them first (no
    upstream runs here; a request that passed would fail to connect, 502)."""
    imaging = {"mode": "proxy", "upstreamUrl": "http://127.0.0.1:9/dicom-web"}
    await edge.create_tenant("proxied", addons=ADDONS, settings={"imaging": imaging})
    auth = {"Authorization": f"Bearer {edge.token('proxied')}"}
    for path in (
        "/med/qido/studies/1.2.x/series",
        "/med/wado/studies/" + "1" * 4001,
        "/med/wado/studies/1.2/series/1.3/instances/1.4x/metadata",
    ):
        answer = await edge.client.get(path, headers=auth)
        envelope(answer, 400, "INVALID_UID")
    frame = "/med/wado/studies/1.2/series/1.3/instances/1.4/frames/99999999999999/rendered"
    envelope(await edge.client.get(frame, headers=auth), 422, "VALIDATION_FAILED")
    answer = await edge.client.get("/med/qido/studies/1.2.3/series", headers=auth)
    assert answer.status_code == 502, answer.text  # valid: it went on to the (absent) upstream


async def test_audit_rows_never_overflow_a_column(edge: Gateway) -> None:
    db = edge.app.state.db
    long = "x" * 4001
    async with db.session_scope() as session:
        audit.record(
            session,
            audit.Actor(long, None),
            "a" * 100,
            "r" * 100,
            long,
            patient_id="p\x00" * 300,
            outcome="o" * 40,
        )
    async with db.sessionmaker() as session:
        query = select(audit.AuditEvent).where(audit.AuditEvent.action == "a" * 64)
        row = (await session.scalars(query)).one()
    assert row.resource_id == "x" * 255 and row.actor == "x" * 255
    assert row.action == "a" * 64 and row.resource_type == "r" * 64 and row.outcome == "o" * 32
    assert row.patient_id is not None and "\x00" not in row.patient_id
    assert len(row.patient_id) == 255


# ----------------------------------------------------------------------------- every route

ATTACKS = (
    "\x00",
    "a\x00b",
    "\x01",
    "\x1b",
    "\x1f",
    "\x7f",
    "x" * 4001,
    "9" * 4001,
    "9223372036854775808",
    "-9223372036854775809",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1." + "2" * 4000,
)
# Query parameters read from the raw query (QIDO-RS) rather than declared.
RAW_QUERY = ("offset", "limit", "PatientName", "SeriesNumber", "StudyDate", "includefield")
_PARAM = re.compile(r"{([^}:]+)(?::([a-z]+))?}")


def routes_with_parameters(app: Any) -> list[tuple[APIRoute, list[str], list[str]]]:
    found = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        path_names = [m.group(1) for m in _PARAM.finditer(route.path)]
        query_names = [str(p.alias) for p in query_params(route.dependant)]
        if route.path.startswith("/med/qido/"):
            query_names += RAW_QUERY
        if path_names or query_names:
            found.append((route, path_names, query_names))
    return found


def query_params(dependant: Dependant) -> list[Any]:
    """Declared query parameters, those of dependencies (the worklist's filter) included."""
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += query_params(sub)
    return found


def fill(template: str, attacked: str | None, value: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, convertor = match.group(1), match.group(2)
        if name == attacked:
            return quote(value, safe="")
        if name == "slug":
            return "acme"  # the tenant under test: the request reaches its body
        return {"int": "1", "path": "00100010"}.get(convertor or "", "1.2.3")

    return _PARAM.sub(one, template)


async def test_every_route_answers_attacks_with_a_4xx_envelope(edge: Gateway) -> None:
    auth = headers(edge)
    found = routes_with_parameters(edge.app)
    assert len(found) > 30  # the walk sees the areas' routes
    failures = []
    for route, path_names, query_names in found:
        for method in sorted(route.methods - {"HEAD"}):
            targets: list[tuple[str | None, str | None]] = [(p, None) for p in path_names]
            targets += [(None, q) for q in query_names]
            for in_path, in_query in targets:
                for value in ATTACKS:
                    url = fill(route.path, in_path, value)
                    params = {in_query: value} if in_query else None
                    answer = await edge.client.request(
                        method, url, params=params, headers=auth, json={}
                    )
                    problem = judge(answer)
                    if problem:
                        failures.append(f"{method} {url[:80]} {in_query}={value[:30]!r}: {problem}")
    assert not failures, "\n".join(failures[:40])


def judge(answer: httpx.Response) -> str | None:
    if answer.status_code >= 500:
        return f"{answer.status_code} {answer.text[:200]}"
    if answer.status_code < 400:
        return None  # a value that is fine for this parameter (a text filter matching nothing)
    if answer.headers.get("content-type", "").startswith("text/html"):
        return None  # the billing portal's pages answer in HTML by design
    try:
        body = answer.json()
    except ValueError:
        return f"{answer.status_code} not JSON: {answer.text[:100]}"
    if not isinstance(body, dict) or not {"code", "message"} <= body.keys():
        return f"{answer.status_code} not the envelope: {answer.text[:100]}"
    return None


BODIES = (
    b"",
    b"{",
    b"null",
    b"[]",
    b'"\\u0000"',
    b"\xff\xfe",
    b"1" * 5000,
    b"1e400",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    b'{"\\u0000": 1}',
    b'{"name": "\\ud800", "settings": {"desk": {"x": "\\udc00"}}, "contacts": ["\\ud800"]}',
)


def takes_a_body(route: APIRoute) -> bool:
    """A model body, or one the route reads itself and declares (HL7 intake, STOW-RS)."""
    declared = "requestBody" in (route.openapi_extra or {})
    return bool(route.methods & {"POST", "PUT"}) and (route.body_field is not None or declared)


async def test_every_json_route_answers_broken_bodies_with_a_4xx_envelope(edge: Gateway) -> None:
    auth = {**headers(edge), "Content-Type": "application/json"}
    failures = []
    routes = [r for r in edge.app.routes if isinstance(r, APIRoute) and takes_a_body(r)]
    assert len(routes) > 10
    for route in routes:
        url = fill(route.path, None, "")
        for method in sorted(route.methods & {"POST", "PUT"}):
            for body in BODIES:
                answer = await edge.client.request(method, url, content=body, headers=auth)
                problem = judge(answer) or (None if answer.status_code >= 400 else "accepted")
                if problem:
                    failures.append(f"{method} {url} {body[:20]!r}: {problem}")
    assert not failures, "\n".join(failures[:40])
