"""Proxy mode's pure parts: paths, URLs in streamed bodies, headers, upstream identity."""

from __future__ import annotations

import pytest

from novaza_gateway.imaging.errors import InvalidQuery
from novaza_gateway.imaging.proxy_rewrite import (
    StreamRewriter,
    UrlRewriter,
    forwarded_query,
    is_text,
    request_headers,
    response_headers,
    upstream_path,
)
from novaza_gateway.imaging.upstream import clash
from novaza_gateway.imaging.upstream_key import UpstreamKey

UP = "http://orthanc.internal:8042/dicom-web"
GW = "https://gw.example/med/wado"
SOP = "/studies/1.2/series/1.2.3/instances/1.2.3.4"


def test_gateway_paths_map_to_the_upstream_root() -> None:
    assert upstream_path("/med/qido/studies") == "/studies"
    assert upstream_path("/med/qido/studies/1.2/series") == "/studies/1.2/series"
    assert upstream_path("/med/stow/studies/1.2") == "/studies/1.2"
    assert upstream_path(f"/med/wado{SOP}/frames/1,2") == f"{SOP}/frames/1,2"
    assert upstream_path(f"/med/wado{SOP}/bulkdata/bulk/7fe00010") == f"{SOP}/bulk/7fe00010"
    with pytest.raises(ValueError):
        upstream_path("/admin/tenants")


def test_upstream_urls_become_gateway_urls_and_bulk_data_round_trips() -> None:
    urls = UrlRewriter(UP + "/", GW)
    assert urls.url(f"{UP}/studies/1.2") == f"{GW}/studies/1.2"
    assert urls.url(f"{UP}{SOP}/frames/1") == f"{GW}{SOP}/frames/1"
    assert urls.url(f"{UP}{SOP}/metadata") == f"{GW}{SOP}/metadata"
    # Orthanc's bulk data layout, and one that already says bulkdata: both invertible.
    for tail in ("bulk/7fe00010", "bulkdata/00431028", "bulk/00281201/1/00100010"):
        gateway = urls.url(f"{UP}{SOP}/{tail}")
        assert gateway == f"{GW}{SOP}/bulkdata/{tail}"
        assert upstream_path("/med/wado" + gateway[len(GW) :]) == f"{SOP}/{tail}"
    # Another host answering with the upstream's root path (Orthanc's DicomWeb.Host).
    assert urls.url(f"http://localhost/dicom-web{SOP}") == f"{GW}{SOP}"
    assert urls.url("https://pacs:443/dicom-web/studies/9") == f"{GW}/studies/9"
    # Not the upstream's: left alone.
    for other in ("http://dicom.nema.org/medical/dicom", "http://x/other/studies/1", "urn:oid:1"):
        assert urls.url(other) == other
    assert (
        urls.url("http://localhost/dicom-web/something") == "http://localhost/dicom-web/something"
    )


def test_an_upstream_at_the_server_root_rewrites_only_its_own_host() -> None:
    urls = UrlRewriter("http://pacs:8080", GW)
    assert urls.url("http://pacs:8080/studies/1") == f"{GW}/studies/1"
    assert urls.url("http://elsewhere/studies/1") == "http://elsewhere/studies/1"


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 11, 64, 10_000])
def test_stream_rewriting_is_the_same_whatever_the_chunking(step: int) -> None:
    body = (
        '[{"00081190":{"vr":"UR","Value":["' + UP + '/studies/1.2"]}},'
        '{"7FE00010":{"vr":"OW","BulkDataURI":"' + UP + SOP + '/bulk/7fe00010"}},'
        '{"x":"see http://dicom.nema.org and htt"}, "' + UP + '/studies/3"]'
    ).encode()
    expected = (
        '[{"00081190":{"vr":"UR","Value":["' + GW + '/studies/1.2"]}},'
        '{"7FE00010":{"vr":"OW","BulkDataURI":"' + GW + SOP + '/bulkdata/bulk/7fe00010"}},'
        '{"x":"see http://dicom.nema.org and htt"}, "' + GW + '/studies/3"]'
    ).encode()
    rewriter = StreamRewriter(UrlRewriter(UP, GW))
    out = b"".join(rewriter.feed(body[i : i + step]) for i in range(0, len(body), step))
    assert out + rewriter.flush() == expected


def test_a_body_ending_in_a_url_is_flushed() -> None:
    rewriter = StreamRewriter(UrlRewriter(UP, GW))
    assert rewriter.feed(f"{UP}/studies/1".encode()) == b""
    assert rewriter.flush() == f"{GW}/studies/1".encode()
    assert StreamRewriter(UrlRewriter(UP, GW)).rewrite_all(b"plain http") == b"plain http"


def test_query_keeps_the_callers_encoding_drops_the_token_and_caps_qido_pages() -> None:
    raw = "PatientName=*CT*&token=nvzs1.x.y&includefield=all&Name=M%C3%BCller%5E%2A"
    kept, page = forwarded_query(raw)
    assert kept == "PatientName=*CT*&includefield=all&Name=M%C3%BCller%5E%2A" and page is None
    kept, page = forwarded_query(raw + "&limit=5", qido_limit=1000)
    assert kept.endswith("&limit=6") and page == 5  # one more than asked: tells a cut
    kept, page = forwarded_query(raw, qido_limit=1000)
    assert kept.endswith("&limit=1001") and page == 1000
    assert forwarded_query("limit=5000", qido_limit=1000) == ("limit=1001", 1000)
    assert forwarded_query("", qido_limit=10) == ("limit=11", 10)
    assert forwarded_query("tok%65n=x&a=1") == ("a=1", None)
    with pytest.raises(InvalidQuery):
        forwarded_query("limit=-1", qido_limit=1000)


def test_request_headers_carry_no_caller_identity() -> None:
    sent = request_headers(
        [
            (b"authorization", b"Bearer caller-jwt"),
            (b"cookie", b"session=1"),
            (b"x-tenant-id", b"other"),
            (b"accept", b'multipart/related; type="application/dicom"'),
            (b"content-type", b"multipart/related; boundary=x"),
            (b"connection", b"keep-alive"),
            (b"transfer-encoding", b"chunked"),
            (b"accept-encoding", b"gzip"),
            (b"x-request-id", b"req-1"),
        ]
    )
    assert sent == {
        "accept": 'multipart/related; type="application/dicom"',
        "content-type": "multipart/related; boundary=x",
        "x-request-id": "req-1",
        "accept-encoding": "identity",
    }


def test_response_headers_drop_hop_by_hop_and_rewrite_locations() -> None:
    upstream = [
        ("Connection", "keep-alive, X-Upstream-Hint"),
        ("Keep-Alive", "timeout=1"),
        ("X-Upstream-Hint", "internal"),
        ("Transfer-Encoding", "chunked"),
        ("WWW-Authenticate", 'Basic realm="Orthanc"'),
        ("Server", "Orthanc"),
        ("Content-Type", "application/dicom+json"),
        ("Content-Length", "42"),
        ("Location", f"{UP}/studies/1.2"),
        ("ETag", '"abc"'),
    ]
    urls = UrlRewriter(UP, GW)
    raw = dict(response_headers(upstream, urls, body_rewritten=False))
    assert raw == {
        b"content-type": b"application/dicom+json",
        b"content-length": b"42",
        b"location": f"{GW}/studies/1.2".encode(),
        b"etag": b'"abc"',
    }
    rewritten = dict(response_headers(upstream, urls, body_rewritten=True))
    assert b"content-length" not in rewritten and b"etag" not in rewritten


def test_only_textual_bodies_are_rewritten() -> None:
    assert is_text("application/dicom+json")
    assert is_text("application/json; charset=utf-8")
    assert is_text('multipart/related; type="application/dicom+xml"; boundary=x')
    assert not is_text('multipart/related; type="application/dicom"; boundary=x')
    assert not is_text("image/jpeg")


def test_upstream_identity_and_clashes() -> None:
    key = UpstreamKey.of
    assert key("http://orthanc:8042/dicom-web") == key("HTTP://Orthanc:8042/dicom-web/")
    assert key("http://localhost:8042/dicom-web").clashes(key("http://127.0.0.1:8042/dicom-web"))
    assert key("http://pacs/dicom-web").clashes(key("http://pacs:80/dicom-web/studies"))
    assert key("http://pacs:8042/").clashes(key("http://pacs:8042/dicom-web"))
    assert not key("http://pacs:8042/dicom-web").clashes(key("http://pacs:8043/dicom-web"))
    assert not key("http://pacs/dicom-web").clashes(key("http://pacs/dicom-web2"))
    dcm4chee = "http://arc:8080/dcm4chee-arc/aets/{}/rs"
    assert not key(dcm4chee.format("A")).clashes(key(dcm4chee.format("B")))
    proxy = {"mode": "proxy", "upstreamUrl": "http://pacs/dicom-web"}
    assert clash(proxy, {**proxy, "upstreamUrl": "http://PACS:80/dicom-web/"}) == "upstreamUrl"
    assert clash(proxy, {**proxy, "mode": "embedded"}) is None
