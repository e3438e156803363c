"""Several gateway processes behind one Redis: one shared limit, one tenant state.

And the other side: Redis that hangs or is gone must cost a request milliseconds, not a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import ADMIN_SCOPE, TENANT_SCOPES
from tests import procs
from tests.conftest import free_port, need

RATE = 20.0
BURST = 20


@dataclass
class Replicas:
    a: procs.ServeProcess
    b: procs.ServeProcess
    data_dir: Path

    def token(self, tenant: str) -> str:
        return devkeys.mint_token(
            self.data_dir, subject="user-1", scopes=TENANT_SCOPES, tenant=tenant
        )

    def admin(self) -> dict[str, str]:
        token = devkeys.mint_token(
            self.data_dir, subject="admin-1", scopes=[ADMIN_SCOPE], tenant=None
        )
        return {"Authorization": f"Bearer {token}"}

    def create_tenant(self, slug: str, **fields: Any) -> dict[str, Any]:
        body = {"slug": slug, "name": slug.title(), "status": "active", **fields}
        response = httpx.post(f"{self.a.url}/admin/tenants/", json=body, headers=self.admin())
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture
def replicas(tmp_path: Path, pg_database: str | None, redis_url: str) -> Iterator[Replicas]:
    """Two ``novaza serve`` processes on one PostgreSQL database and one Redis.

    The tenant cache lives 60 s here, so only the Redis announcement can make a change
    visible on the other replica within the 2 s the tests allow.
    """
    need(pg_database is not None, "PostgreSQL not reachable")
    assert pg_database is not None
    data_dir = tmp_path / "data"
    # The shared limit is what these tests measure; the 25 ms fallback has tests of its own,
    # and on a loaded 2-core CI box a scheduling hiccup must not flip a replica to local.
    env = procs.novaza_env(
        data_dir,
        pg_database,
        redis_url,
        tenant_cache_ttl_seconds="60",
        ratelimit_redis_timeout_ms="250",
    )
    devkeys.load_or_create_key(data_dir)  # the key both replicas trust
    a = procs.start(env, wait_ready=False)
    try:
        b = procs.start(env, wait_ready=False)
        try:
            procs.wait_healthy(a)
            procs.wait_healthy(b)
            yield Replicas(a, b, data_dir)
        finally:
            b.stop()
            b.kill_group()
    finally:
        a.stop()
        a.kill_group()


# ----------------------------------------------------------------------------- one limit


@dataclass
class Outcome:
    status: int
    replica: str
    headers: httpx.Headers
    body: dict[str, Any] | None


@dataclass
class Hammer:
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed: float = 0.0


async def hammer(urls: dict[str, str], token: str, seconds: float, per_replica: int) -> Hammer:
    """Concurrent whoami calls on every replica until ``seconds`` have passed."""
    result = Hammer()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=per_replica, max_keepalive_connections=per_replica)
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=10)
            )
            for name, url in urls.items()
        }
        begin = time.monotonic()
        deadline = begin + seconds

        async def worker(name: str) -> None:
            client = clients[name]
            while time.monotonic() < deadline:
                response = await client.get("/api/v1/whoami", headers=headers)
                body = response.json() if response.status_code != 200 else None
                result.outcomes.append(Outcome(response.status_code, name, response.headers, body))

        await asyncio.gather(*(worker(name) for name in urls for _ in range(per_replica)))
        result.elapsed = time.monotonic() - begin  # from the first send to the last answer
    return result


def fallbacks(server: procs.ServeProcess) -> float:
    """Decisions a replica took alone because Redis failed it (the shared limit leaks)."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "novaza_ratelimit_fallbacks_total"
    )


def test_two_replicas_share_one_limit(replicas: Replicas) -> None:
    slug = f"rl-{uuid.uuid4().hex[:10]}"
    replicas.create_tenant(slug)
    override = {"rateLimit": {"ratePerSecond": RATE, "burst": BURST}}
    updated = httpx.put(
        f"{replicas.a.url}/admin/tenants/{slug}", json=override, headers=replicas.admin()
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["effectiveRateLimit"] == {"ratePerSecond": RATE, "burst": BURST}

    run = asyncio.run(
        hammer({"a": replicas.a.url, "b": replicas.b.url}, replicas.token(slug), 3.0, 6)
    )
    admitted = [o for o in run.outcomes if o.status == 200]
    refused = [o for o in run.outcomes if o.status != 200]
    bound = BURST + RATE * run.elapsed
    print(
        f"\nshared limit: {len(run.outcomes)} requests in {run.elapsed:.2f}s, "
        f"admitted {len(admitted)} (a {sum(o.replica == 'a' for o in admitted)}, "
        f"b {sum(o.replica == 'b' for o in admitted)}), bound {bound:.1f}"
    )
    assert len(run.outcomes) >= 300, "not enough load to test the limit"
    assert len(admitted) <= bound * 1.01 + 1, (
        f"local fallback decisions: {fallbacks(replicas.a)} on A, {fallbacks(replicas.b)} on B"
    )
    assert len(admitted) >= 0.85 * bound
    # the limit is shared, not split: each replica admitted part of it
    assert {o.replica for o in admitted} == {"a", "b"}
    for outcome in refused:
        assert outcome.status == 429, (outcome.status, outcome.body)
        retry_after = outcome.headers["retry-after"]
        assert retry_after.isdigit()
        assert int(retry_after) >= 1
        assert outcome.body is not None
        assert outcome.body["code"] == "RATE_LIMITED"
        assert outcome.body["details"] == {"retryAfterSeconds": int(retry_after)}
        assert outcome.headers["x-ratelimit-remaining"] == "0"
    # a refusal at this rate is at most one interval from the next slot: Retry-After rounds up
    assert {int(o.headers["retry-after"]) for o in refused} == {math.ceil(1 / RATE)}


def test_suspension_on_one_replica_reaches_the_other_within_2s(replicas: Replicas) -> None:
    slug = f"sus-{uuid.uuid4().hex[:10]}"
    replicas.create_tenant(slug)
    headers = {"Authorization": f"Bearer {replicas.token(slug)}"}
    whoami_a = f"{replicas.a.url}/api/v1/whoami"
    whoami_b = f"{replicas.b.url}/api/v1/whoami"
    assert httpx.get(whoami_b, headers=headers).status_code == 200  # B caches it for 60 s
    assert httpx.get(whoami_a, headers=headers).status_code == 200

    def first_answer_not(url: str, status: int) -> tuple[httpx.Response, float]:
        begin = time.monotonic()
        while True:
            response = httpx.get(url, headers=headers)
            waited = time.monotonic() - begin
            if response.status_code != status or waited > 2.0:
                return response, waited
            time.sleep(0.02)

    suspended = httpx.post(
        f"{replicas.a.url}/admin/tenants/{slug}/suspend", headers=replicas.admin()
    )
    assert suspended.status_code == 200, suspended.text
    response, waited = first_answer_not(whoami_b, 200)
    print(f"\nsuspension on A seen by B after {waited * 1000:.0f} ms")
    assert response.status_code == 403, f"B still admits the tenant {waited:.1f}s later"
    assert response.json()["code"] == "TENANT_SUSPENDED"

    # and back, the other way round
    activated = httpx.post(
        f"{replicas.b.url}/admin/tenants/{slug}/activate", headers=replicas.admin()
    )
    assert activated.status_code == 200, activated.text
    response, waited = first_answer_not(whoami_a, 403)
    print(f"activation on B seen by A after {waited * 1000:.0f} ms")
    assert response.status_code == 200, f"A still refuses the tenant {waited:.1f}s later"


# ----------------------------------------------------------------------------- Redis trouble


class SilentServer:
    """Accepts TCP connections and never answers nor closes them: a hung Redis."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self.accepted:
            conn.close()


@contextlib.contextmanager
def silent_redis() -> Iterator[str]:
    server = SilentServer()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
        assert server.accepted, "the gateway never connected: the test proved nothing"
    finally:
        server.close()


@contextlib.contextmanager
def closed_redis() -> Iterator[str]:
    yield f"redis://127.0.0.1:{free_port()}/0"  # bound then released: nothing listens


@pytest.mark.parametrize("broken", [silent_redis, closed_redis], ids=["silent", "closed"])
def test_broken_redis_costs_milliseconds_and_only_degrades(
    tmp_path: Path, sqlite_url: str, broken: Any
) -> None:
    data_dir = tmp_path / "data"
    # created without Redis (the CLI would wait on the hung one): the serving path is under test
    create = "tenants create acme --name Acme --plan enterprise --activate"
    procs.run_cli(procs.novaza_env(data_dir, sqlite_url), *create.split())
    headers = {
        "Authorization": "Bearer "
        + devkeys.mint_token(data_dir, subject="u", scopes=TENANT_SCOPES, tenant="acme")
    }
    with (
        broken() as redis_url,
        procs.serving(procs.novaza_env(data_dir, sqlite_url, redis_url)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        durations = []
        for _ in range(30):
            begin = time.perf_counter()
            response = client.get("/api/v1/whoami", headers=headers)
            durations.append(time.perf_counter() - begin)
            assert response.status_code == 200, response.text
        print(f"\n{broken.__name__}: slowest whoami {max(durations) * 1000:.0f} ms")
        assert max(durations) < 0.5, durations

        begin = time.perf_counter()
        ready = client.get("/health/ready")
        ready_seconds = time.perf_counter() - begin
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "degraded"
        assert body["checks"]["ratelimit"]["status"] == "degraded"
        assert body["checks"]["redis"]["status"] == "degraded"
        assert body["checks"]["database"]["status"] == "ok"
        assert ready_seconds < 2.0
