"""QIDO-RS through the proxy: one upstream search, or — for an exact ``PatientID`` naming a
merged patient (ADT A40, ADR 0036) — one per identifier of the survivor, merged here.

Either way the answer is read whole (QIDO pages are bounded JSON), its URLs rewritten, the
page capped as in embedded mode (``Warning: 299`` when cut), the patient IDs of merged
records reported as the survivor's, and the search audited before the answer leaves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from novaza_gateway.imaging import patient_merges, proxy_merges
from novaza_gateway.imaging.dicomweb.qido import MAX_LIMIT
from novaza_gateway.imaging.proxy_audit import (
    MAX_AUDITED_STUDIES,
    PATIENT_ID,
    first_string,
    search_summary,
)
from novaza_gateway.imaging.proxy_errors import status_error
from novaza_gateway.imaging.proxy_io import json_list, read_small
from novaza_gateway.imaging.proxy_rewrite import StreamRewriter, forwarded_query, request_headers
from novaza_gateway.imaging.upstream import Upstream

if TYPE_CHECKING:
    from novaza_gateway.imaging.proxy import Call, ImagingProxy

DICOM_JSON = "application/dicom+json"
QIDO_PAGE = 1000  # an upstream page when a merged patient's identifiers are walked
MAX_MERGED_RESULTS = 5000  # per identifier; beyond, the merged answer says Warning: 299
CUT_WARNING = (
    '299 novaza: "The number of results exceeded the maximum supported by the server or '
    'the limit asked for. Additional results can be requested."'
)
SEARCH_LEVELS = {
    "search_studies": "study",
    "search_series": "series",
    "search_study_series": "series",
    "search_instances": "instance",
    "search_study_instances": "instance",
    "search_series_instances": "instance",
}


async def search(proxy: ImagingProxy, call: Call, upstream: Upstream) -> Response:
    query, page = forwarded_query(call.query, qido_limit=MAX_LIMIT)
    assert page is not None
    headers = request_headers(call.scope["headers"])
    headers["accept"] = DICOM_JSON  # QIDO answers DICOM JSON, as in embedded mode
    identifiers = await _merged_identifiers(proxy, call)
    body: bytes | None = None
    if identifiers:  # ADT A40: one upstream search per identifier of the survivor
        results, cut = await _merged_page(proxy, call, upstream, headers, identifiers, page)
    else:
        body = await _answer(proxy, call, upstream, query, headers)
        results = json_list(body)
        cut = len(results) > page
        if cut or not body.strip():  # cut, or an empty answer (204): a list of the page
            results, body = results[:page], None
    coerced = await _audited(proxy, call, upstream, results)
    datasets = [r for r in results if isinstance(r, dict)]
    if any(first_string(d, PATIENT_ID) in coerced for d in datasets):
        patient_merges.coerce(datasets, coerced)
        body = None
    warning = {"Warning": CUT_WARNING} if cut else None
    if body is None:
        body = orjson.dumps(results)
    return Response(body, status_code=200, media_type=DICOM_JSON, headers=warning)


async def _answer(
    proxy: ImagingProxy, call: Call, upstream: Upstream, query: str, headers: dict[str, str]
) -> bytes:
    """One upstream QIDO answer, read whole (capped), its URLs the gateway's."""
    response = await proxy.send(upstream, "GET", call, query, headers)
    try:
        if response.status_code >= 300:
            raise status_error(response.status_code, call.kind, call.level)
        body = await read_small(response)
    finally:
        await response.aclose()
    return StreamRewriter(proxy.urls(call, upstream)).rewrite_all(body)


async def _merged_page(
    proxy: ImagingProxy,
    call: Call,
    upstream: Upstream,
    headers: dict[str, str],
    identifiers: list[str],
    page: int,
) -> tuple[list[Any], bool]:
    """The caller's page of every identifier's answer merged (each result once, in the
    embedded archive's order), and whether more remain beyond it."""
    offset = proxy_merges.caller_offset(call.query)
    answers, capped = [], False
    for identifier in identifiers:
        found, more = await _identifier_results(proxy, call, upstream, headers, identifier)
        answers.append(found)
        capped = capped or more
    everything = proxy_merges.merged(SEARCH_LEVELS.get(call.route, "study"), answers)
    return everything[offset : offset + page], capped or len(everything) > offset + page


async def _audited(
    proxy: ImagingProxy, call: Call, upstream: Upstream, results: list[Any]
) -> dict[str, str]:
    """Audits the search (the patient under the survivor's ID, as embedded mode names it)
    and answers the coercions of the Patient IDs involved, in one short session."""
    studies, count = search_summary(results)
    proxy.patients.remember(call.tenant_id, studies)  # as stored upstream
    stored = proxy.patients.patients_of(call.tenant_id, studies)
    single = next(iter(stored)) if len(stored) == 1 else None
    looked = None  # the study's patient when the answer names none, or several
    if single is None and call.study is not None:
        looked = await proxy.study_patient(upstream, call)
    shown = {first_string(r, PATIENT_ID) for r in results if isinstance(r, dict)}
    level = SEARCH_LEVELS.get(call.route, "study")
    async with proxy.database.session_scope() as session:
        lookup = patient_merges.MergeLookup(session, call.tenant_id)
        coerced = await lookup.coercions({p for p in {*shown, *stored, looked} if p})
        reported = {coerced.get(p, p) if p else None for p in stored}
        patient = reported.pop() if len(reported) == 1 else None
        if patient is None and looked is not None:
            patient = coerced.get(looked, looked)
        proxy.record(
            session, call, f"imaging.search.{level}", level, call.study, patient=patient,
            after={"results": count, "studies": sorted(studies)[:MAX_AUDITED_STUDIES],
                   "mode": "proxy"},
        )  # fmt: skip
    return coerced


async def _merged_identifiers(proxy: ImagingProxy, call: Call) -> list[str]:
    """The identifiers of the survivor an exact ``PatientID`` names (ADT A40), sorted;
    empty when it names no patient others were merged into (the search goes as asked)."""
    asked = proxy_merges.exact_patient_id(call.query)
    if asked is None:
        return []
    async with proxy.database.session_scope() as session:
        found = await patient_merges.MergeLookup(session, call.tenant_id).identifiers_of(asked)
    return sorted(found)


async def _identifier_results(
    proxy: ImagingProxy, call: Call, upstream: Upstream, headers: dict[str, str], identifier: str
) -> tuple[list[Any], bool]:
    """One identifier's whole upstream answer, walked in pages of ``QIDO_PAGE`` (at most
    ``MAX_MERGED_RESULTS``), exact matches kept; and whether the walk stopped short."""
    found: list[Any] = []
    offset = 0
    while True:
        query = proxy_merges.identifier_query(
            call.query, identifier, offset=offset, limit=QIDO_PAGE
        )
        page = json_list(await _answer(proxy, call, upstream, query, headers))
        found += proxy_merges.exact(page, identifier)
        offset += QIDO_PAGE
        if len(page) < QIDO_PAGE:
            return found, False
        if offset >= MAX_MERGED_RESULTS:
            return found, True
