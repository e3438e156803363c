"""``novaza serve`` as a real process: HTTP over a socket, logs, signals, workers, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from novaza_gateway import API_VERSION
from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import ADMIN_SCOPE, TENANT_SCOPES
from tests import procs
from tests.conftest import need_tool


@dataclass
class Served:
    server: procs.ServeProcess
    data_dir: Path
    tenant_token: str


def copy_database(template: Path, data_dir: Path) -> str:
    """A migrated SQLite file of its own (``novaza migrate`` itself is tested in test_cli)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, data_dir / "novaza.db")
    return f"sqlite:///{data_dir / 'novaza.db'}"


def admin_headers(data_dir: Path) -> dict[str, str]:
    token = devkeys.mint_token(data_dir, subject="admin-1", scopes=[ADMIN_SCOPE], tenant=None)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Served]:
    """One single-worker gateway for the read-only checks of this module.

    The tenant comes from ``novaza tenants create`` and the token from ``novaza token``: the
    server must trust what the CLI signs with the key in the shared data dir.
    """
    data_dir = tmp_path_factory.mktemp("served") / "data"
    env = procs.novaza_env(data_dir, copy_database(sqlite_template, data_dir))
    devkeys.load_or_create_key(data_dir)
    create, token = procs.run_cli_parallel(
        (env, ("tenants", "create", "acme", "--name", "Acme", "--activate")),
        (env, ("token", "--tenant", "acme")),
    )
    assert create.returncode == 0, create.stderr
    assert token.returncode == 0, token.stderr
    with procs.serving(env) as server:
        yield Served(server, data_dir, token.stdout.strip())


def wait_for_log(server: procs.ServeProcess, caller_id: str) -> dict[str, object]:
    """The access-log line of the request the caller sent as ``X-Request-Id: caller_id``
    (written just after the response left); its own ``requestId`` is the gateway's."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in server.log_lines():
            if line.get("callerRequestId") == caller_id and line.get("msg") == "request":
                assert line.get("requestId") not in (None, caller_id)
                return line
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {caller_id}\n{server.stderr()}")


# ----------------------------------------------------------------------------- HTTP


def test_health_and_whoami_over_real_http(served: Served) -> None:
    url = served.server.url
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    response = httpx.get(
        f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {served.tenant_token}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tenant"] == "acme"
    assert body["subject"] == "dev-user"
    assert body["scopes"] == sorted(TENANT_SCOPES)
    assert body["rateLimit"]["ratePerSecond"] > 0
    assert response.headers["x-ratelimit-limit"] == str(body["rateLimit"]["burst"])
    assert "server" not in response.headers  # no uvicorn banner

    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "authorized", "status"),
    [
        ("GET", "/health", False, 200),
        ("GET", "/api/v1/whoami", True, 200),
        ("GET", "/no/such/route", False, 404),
        ("DELETE", "/health", False, 405),
        ("GET", "/api/v1/whoami", False, 401),
        ("POST", "/admin/tenants/", False, 401),
    ],
)
def test_every_answer_carries_request_id_and_api_version(
    served: Served, method: str, path: str, authorized: bool, status: int
) -> None:
    headers = {"Authorization": f"Bearer {served.tenant_token}"} if authorized else {}
    with httpx.Client(base_url=served.server.url) as client:
        generated = client.request(method, path, headers=headers)
        echoed = client.request(method, path, headers={**headers, "X-Request-Id": "caller-42.a"})
        replaced = client.request(method, path, headers={**headers, "X-Request-Id": "bad id!"})
    for response in (generated, echoed, replaced):
        assert response.status_code == status, response.text
        assert response.headers["x-api-version"] == API_VERSION
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", response.headers["x-request-id"])
    assert echoed.headers["x-request-id"] == "caller-42.a"
    assert replaced.headers["x-request-id"] != "bad id!"
    assert generated.headers["x-request-id"] != replaced.headers["x-request-id"]
    if status >= 400:
        assert set(generated.json()) >= {"code", "message"}


def test_logs_are_json_lines_with_request_id_and_never_the_token(served: Served) -> None:
    server = served.server
    token = served.tenant_token
    forged = token[:-12] + "AAAAAAAAAAAA"  # valid shape, bad signature
    with httpx.Client(base_url=server.url) as client:
        ok = client.get(
            "/api/v1/whoami",
            params={"access_token": token},
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "log-ok-1"},
        )
        refused = client.get(
            "/api/v1/whoami",
            headers={"Authorization": f"Bearer {forged}", "X-Request-Id": "log-refused-1"},
        )
    assert ok.status_code == 200
    assert refused.status_code == 401

    line = wait_for_log(server, "log-ok-1")
    assert line["status"] == 200
    assert line["route"] == "/api/v1/whoami"  # the template, not the raw path and query
    assert line["tenant"] == "acme"
    assert line["level"] == "info"
    assert isinstance(line["durationMs"], float | int)
    assert wait_for_log(server, "log-refused-1")["status"] == 401
    auth_failures = [
        entry
        for entry in server.log_lines()
        if entry.get("callerRequestId") == "log-refused-1" and entry.get("msg") != "request"
    ]
    assert auth_failures, "the refused token left no log line of its own"

    text = server.stderr()
    # log_lines() already failed on any line that is not JSON
    signature = token.rsplit(".", 1)[1]
    for secret in (token, forged, signature, forged.rsplit(".", 1)[1]):
        assert secret not in text
    assert "access_token" not in text
    assert "Traceback" not in text


def test_metrics_single_worker_pass_promtool(served: Served) -> None:
    promtool = need_tool("promtool")
    body = httpx.get(f"{served.server.url}/metrics").text
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    names = {family.name for family in text_string_to_metric_families(body)}
    assert {
        "novaza_http_requests",
        "novaza_http_request_duration_seconds",
        "novaza_build_info",
        "novaza_db_pool_size",
    } <= names


# ----------------------------------------------------------------------------- SIGTERM


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body, read to its last byte."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before the headers: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for header in header_lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(body)} of {length} body bytes")
        body += chunk
    return int(status_line.split()[1]), headers, body


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_sigterm_drains_the_request_in_flight_then_exits_0(
    tmp_path: Path, sqlite_template: Path
) -> None:
    data_dir = tmp_path / "data"
    env = procs.novaza_env(data_dir, copy_database(sqlite_template, data_dir))
    admin = admin_headers(data_dir)["Authorization"]
    body = json.dumps({"slug": "drained", "name": "Drained", "status": "active"}).encode()
    head = (
        "POST /admin/tenants/ HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: {admin}\r\n"
        "Content-Type: application/json\r\n"
        "X-Request-Id: drain-1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    server = procs.start(env)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + body[:7])  # the request is in flight: headers, part of the body
            time.sleep(0.3)
            server.signal(signal.SIGTERM)
            # the listener closes (so the signal was taken) while this request is still open
            deadline = time.monotonic() + 10
            while not refuses_connections(server.port):
                assert time.monotonic() < deadline, "still accepting 10 s after SIGTERM"
                time.sleep(0.05)
            assert server.proc.poll() is None, "exited with a request in flight"
            sock.sendall(body[7:])
            status, headers, answer = read_response(sock, timeout=10)
        assert status == 201, answer
        assert headers["x-request-id"] == "drain-1"
        assert json.loads(answer)["slug"] == "drained"
        assert server.wait(15) == 0, server.stderr()
    finally:
        server.kill_group()
    with contextlib.closing(sqlite3.connect(data_dir / "novaza.db")) as conn:
        # committed, not lost in the shutdown
        rows = conn.execute("SELECT status FROM tenants WHERE slug='drained'").fetchall()
    assert rows == [("active",)]
    assert "Traceback" not in server.stderr()


# ----------------------------------------------------------------------------- workers


def whoami_counts(metrics_text: str) -> dict[str, float]:
    """novaza_http_requests_total of GET requests, by route template (all statuses)."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "novaza_http_requests":
            continue
        for sample in family.samples:
            if sample.name == "novaza_http_requests_total" and sample.labels["method"] == "GET":
                route = sample.labels["route"]
                counts[route] = counts.get(route, 0.0) + sample.value
    return counts


def metrics_dir_of(server: procs.ServeProcess) -> Path:
    """The multiprocess directory of a ``--workers`` supervisor: its own, in the temp dir."""
    [found] = Path(tempfile.gettempdir()).glob(f"novaza-metrics-{server.pid}-*")
    return found


def per_worker_whoami(multiproc_dir: Path, scratch: Path) -> dict[str, float]:
    """Each worker's own whoami count, read from its own sample file."""
    found = {}
    for path in sorted(multiproc_dir.glob("counter_*.db")):
        single = scratch / path.stem
        single.mkdir(parents=True)
        shutil.copy(path, single / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(single))  # type: ignore[no-untyped-call]
        total = 0.0
        for family in registry.collect():
            for sample in family.samples:
                if (
                    sample.name == "novaza_http_requests_total"
                    and sample.labels.get("route") == "/api/v1/whoami"
                ):
                    total += sample.value
        found[path.stem] = total
    return found


async def drive(url: str, token: str, count: int, concurrency: int = 8) -> list[int]:
    """``count`` whoami calls, each on a fresh connection so the kernel spreads them."""
    statuses: list[int] = []
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            queue.pop()
            async with httpx.AsyncClient() as client:
                response = await client.get(
                    f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
                )
                statuses.append(response.status_code)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_two_workers_metrics_count_every_workers_requests(
    tmp_path: Path, sqlite_template: Path
) -> None:
    promtool = need_tool("promtool")
    data_dir = tmp_path / "data"
    env = procs.novaza_env(data_dir, copy_database(sqlite_template, data_dir))
    devkeys.load_or_create_key(data_dir)
    token = devkeys.mint_token(data_dir, subject="u", scopes=TENANT_SCOPES, tenant="busy")
    with procs.serving(env, workers=2) as server:
        multiproc_dir = metrics_dir_of(server)
        tenant = {"slug": "busy", "name": "Busy", "plan": "enterprise", "status": "active"}
        created = httpx.post(
            f"{server.url}/admin/tenants/", json=tenant, headers=admin_headers(data_dir)
        )
        assert created.status_code == 201, created.text
        sent = 0
        per_worker: dict[str, float] = {}
        # both workers must have answered some, or one worker's view would pass unnoticed
        while sent < 200 and sum(1 for v in per_worker.values() if v > 0) < 2:
            statuses = asyncio.run(drive(server.url, token, 50))
            assert statuses == [200] * 50
            sent += 50
            per_worker = per_worker_whoami(multiproc_dir, tmp_path / f"scratch-{sent}")
        assert sum(1 for v in per_worker.values() if v > 0) == 2, per_worker
        assert sum(per_worker.values()) == sent

        scrapes = []
        for _ in range(6):
            with httpx.Client() as client:  # a fresh connection: any worker may answer
                response = client.get(f"{server.url}/metrics")
            assert response.status_code == 200
            scrapes.append(response.text)
            time.sleep(0.05)  # the answering worker counts its scrape just after the last byte
    for index, text in enumerate(scrapes):
        counts = whoami_counts(text)
        assert counts.get("/api/v1/whoami") == sent, (index, counts)
        # every earlier scrape is counted, whichever worker served it
        assert counts.get("/metrics", 0.0) == index, (index, counts)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=scrapes[-1], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert server.proc.returncode == 0
    assert not multiproc_dir.exists()  # removed at exit
    # the supervisor's own lines are JSON too (log_lines fails on any that is not)
    messages = [str(line.get("msg")) for line in server.log_lines()]
    assert any(m.startswith("Started parent process") for m in messages), messages
    assert any(m.startswith("Stopping parent process") for m in messages), messages
