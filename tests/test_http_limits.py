"""The HTTP edge of a real ``novaza serve`` over raw sockets (core.httpserver, docs/security.md):
header limits (431), slow heads and bodies (408), the connection cap (503), whose
``X-Forwarded-For`` counts, and failed authentications limited per client address (429)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import ADMIN_SCOPE
from tests import procs

HEAD_TIMEOUT = 1.5


@dataclass
class Edge:
    server: procs.ServeProcess
    data_dir: Path

    def admin_token(self) -> str:
        return devkeys.mint_token(
            self.data_dir, subject="admin-1", scopes=[ADMIN_SCOPE], tenant=None
        )

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=10)


def _env(data_dir: Path, template: Path, **extra: str) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, data_dir / "novaza.db")
    devkeys.load_or_create_key(data_dir)
    return procs.novaza_env(data_dir, f"sqlite:///{data_dir / 'novaza.db'}", **extra)


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Edge]:
    """Clients reach the gateway directly: no trusted proxy, short timeouts."""
    data_dir = tmp_path_factory.mktemp("edge-direct") / "data"
    env = _env(
        data_dir,
        sqlite_template,
        header_timeout_seconds=str(HEAD_TIMEOUT),
        body_timeout_seconds="2",
        max_headers="40",
        max_header_bytes="8192",
    )
    with procs.serving(env) as server:
        yield Edge(server, data_dir)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Edge]:
    """Behind a proxy on 127.0.0.0/8: its X-Forwarded-For counts; 20 connections at most."""
    data_dir = tmp_path_factory.mktemp("edge-proxied") / "data"
    env = _env(
        data_dir,
        sqlite_template,
        trusted_proxies="127.0.0.0/8, ::1",
        max_connections="20",
        auth_failures_per_minute="5",
    )
    with procs.serving(env) as server:
        yield Edge(server, data_dir)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response (the server closes after a refusal; else Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def health_ok(edge: Edge) -> bool:
    return httpx.get(f"{edge.server.url}/health", timeout=5).status_code == 200


def access_line(server: procs.ServeProcess, caller_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in server.log_lines():
            if line.get("callerRequestId") == caller_id and line.get("msg") == "request":
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access line for {caller_id}\n{server.stderr()}")


# ----------------------------------------------------------------------------- 431


@pytest.mark.parametrize(
    "extra",
    [
        b"".join(b"X-Filler-%d: a\r\n" % i for i in range(60)),  # 60 fields, 40 allowed
        b"X-Big: " + b"a" * 9000 + b"\r\n",  # one field past 8 KiB, in one read
    ],
    ids=["too-many-fields", "too-many-bytes"],
)
def test_a_head_past_the_limits_is_answered_431_and_closed(direct: Edge, extra: bytes) -> None:
    with direct.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n")
        status, headers, body = read_response(sock)
        assert status == 431
        assert headers["connection"] == "close"
        assert json.loads(body)["code"] == "HEADERS_TOO_LARGE"
        assert closed_by_server(sock)
    assert health_ok(direct)


def test_a_head_growing_past_the_limit_in_pieces_is_refused_before_it_ends(direct: Edge) -> None:
    with direct.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Endless: ")
        for _ in range(3):  # 12 KiB of one value, never finished
            sock.sendall(b"a" * 4096)
            time.sleep(0.05)
        status, _, body = read_response(sock)
    assert status == 431
    assert json.loads(body)["code"] == "HEADERS_TOO_LARGE"


def test_a_head_within_the_limits_is_served(direct: Edge) -> None:
    with direct.connect() as sock:
        fields = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"b" * 100) for i in range(30))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n" + fields + b"\r\n")
        assert read_response(sock)[0] == 200


# ----------------------------------------------------------------------------- 408


def test_slowloris_connections_get_408_within_the_timeout_and_a_normal_client_is_served(
    direct: Edge,
) -> None:
    socks = [direct.connect() for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        answered: dict[int, bytes] = {}
        began = time.monotonic()
        while len(answered) < len(socks) and time.monotonic() - began < HEAD_TIMEOUT * 4:
            assert health_ok(direct)  # served all along
            for i, sock in enumerate(socks):
                if i in answered:
                    continue
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")  # one header byte at a time
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    data = None
                except ConnectionResetError:
                    data = b""
                sock.setblocking(True)
                if data is not None:
                    answered[i] = data
            time.sleep(0.25)
        assert len(answered) == len(socks), f"{len(socks) - len(answered)} still open"
        statuses = {data.split(b" ")[1] for data in answered.values() if data}
        assert statuses == {b"408"}
        assert all(b"REQUEST_TIMEOUT" in data for data in answered.values() if data)
    finally:
        for sock in socks:
            sock.close()


def test_an_idle_keep_alive_connection_closes_without_an_answer(direct: Edge) -> None:
    with direct.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")  # keep-alive works
        assert read_response(sock)[0] == 200
        assert sock.recv(4096) == b""  # then nothing sent: a close, no stray 408


def test_a_slow_next_head_after_an_answer_given_before_the_body_ended_gets_408(
    direct: Edge,
) -> None:
    """401 goes out before the body arrives, the body ends later than a head timeout: the
    next head is timed from the body's end."""
    head = b"POST /admin/tenants/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 20\r\n\r\n"
    with direct.connect() as sock:
        sock.sendall(head + b"0123456789")
        assert read_response(sock)[0] == 401
        time.sleep(HEAD_TIMEOUT + 0.2)  # past the head timer armed by the answer, body pending
        sock.sendall(b"0123456789" + b"GET /health HTTP/1.1\r\n")  # the next head, slowly
        began = time.monotonic()
        while time.monotonic() - began < HEAD_TIMEOUT * 4:
            sock.sendall(b"X")
            sock.settimeout(0.25)
            try:
                data = sock.recv(4096)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("the slow head was never answered")
        assert data.split(b" ")[1] == b"408"


def test_a_body_that_stops_arriving_gets_408(direct: Edge) -> None:
    head = (
        "POST /admin/tenants/ HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {direct.admin_token()}\r\nContent-Length: 200\r\n\r\n"
    )
    with direct.connect() as sock:
        sock.sendall(head.encode() + b'{"slug": "')
        status, headers, body = read_response(sock)
        assert status == 408
        assert headers["connection"] == "close"
        assert json.loads(body)["code"] == "REQUEST_TIMEOUT"


def test_a_body_that_keeps_arriving_is_not_cut_off(direct: Edge) -> None:
    """3 s of body with pauses of 0.5 s: longer than the 2 s body timeout, never idle."""
    payload = b'{"slug": "steady", "name": "Steady"' + b" " * 300 + b"}"
    head = (
        "POST /admin/tenants/ HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {direct.admin_token()}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with direct.connect() as sock:
        sock.sendall(head.encode())
        pieces = [payload[i : i + 50] for i in range(0, len(payload), 50)]
        for piece in pieces:
            time.sleep(3 / len(pieces))
            sock.sendall(piece)
        status, _, body = read_response(sock)
    assert status == 201, body


# ----------------------------------------------------------------------------- 503


def test_past_the_connection_cap_the_next_connection_gets_503_until_others_close(
    proxied: Edge,
) -> None:
    held = [proxied.connect() for _ in range(20)]
    try:
        with proxied.connect() as extra:
            status, headers, body = read_response(extra)
            assert status == 503
            assert headers["retry-after"] == "1"
            assert json.loads(body)["code"] == "SERVER_BUSY"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:  # the server notices the closes within a loop turn or two
        try:
            if health_ok(proxied):
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.1)


# ----------------------------------------------------------------------------- X-Forwarded-For


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(direct: Edge) -> None:
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Request-Id": "xff-untrusted-1"}
    assert httpx.get(f"{direct.server.url}/health", headers=headers).status_code == 200
    assert access_line(direct.server, "xff-untrusted-1")["client"] == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_names_the_right_most_untrusted_hop(
    proxied: Edge,
) -> None:
    # The client claimed 198.51.100.1; the proxy appended the address it saw it connect from.
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 127.0.0.7", "X-Request-Id": "xff-1"}
    assert httpx.get(f"{proxied.server.url}/health", headers=headers).status_code == 200
    assert access_line(proxied.server, "xff-1")["client"] == "203.0.113.9"


def test_failed_authentications_are_limited_per_forwarded_client(proxied: Edge) -> None:
    url = f"{proxied.server.url}/admin/tenants/"
    bad = {"Authorization": "Bearer not-a-token"}
    sprayer = {**bad, "X-Forwarded-For": "203.0.113.50"}
    statuses = [httpx.get(url, headers=sprayer).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    refused = httpx.get(url, headers=sprayer)
    assert refused.json()["code"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1
    other = {**bad, "X-Forwarded-For": "203.0.113.51"}
    assert httpx.get(url, headers=other).status_code == 401
    fresh = {"Authorization": f"Bearer {proxied.admin_token()}", "X-Forwarded-For": "203.0.113.52"}
    assert httpx.get(url, headers=fresh).status_code == 200
