"""Shutdown shaped for Kubernetes, on real ``novaza serve`` processes (ADR 0066, 0067).

SIGTERM turns readiness 503 at once while in-flight requests go on; AI requests still queued
for the model are refused with a 503; a generation that outlives the grace ends with an SSE
error event, not a cut connection. A SIGKILLed ``--workers`` supervisor takes its workers
with it, and two supervisors on one data dir keep their own metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from novaza_gateway.core import devkeys
from tests import procs
from tests.ai.conftest import MODEL
from tests.test_process import metrics_dir_of, per_worker_whoami, whoami_counts

COUNT = [{"role": "user", "content": "Count from one to one hundred."}]
CHAT = "/ai/chat/completions"
# A gateway process imports the whole app (each spawned worker too): on a loaded 2-core
# machine that alone can take half a minute.
START_TIMEOUT = 120.0


@dataclass
class Prepared:
    data_dir: Path
    token: str  # ai:use for tenant "clinic", signed with the data dir's dev key


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Prepared:
    """A data dir with a migrated database, an active tenant and a dev key: each test serves
    a copy of it (every test ends its server)."""
    data_dir = tmp_path_factory.mktemp("shutdown") / "data"
    data_dir.mkdir()
    shutil.copy(sqlite_template, data_dir / "novaza.db")
    env = procs.novaza_env(data_dir, f"sqlite:///{data_dir / 'novaza.db'}")
    devkeys.load_or_create_key(data_dir)
    procs.run_cli(env, "tenants", "create", "clinic", "--name", "Clinic", "--activate")
    token = devkeys.mint_token(data_dir, subject="u", scopes=["ai:use"], tenant="clinic")
    return Prepared(data_dir, token)


def env_for(prepared: Prepared, target: Path, **settings: str) -> dict[str, str]:
    shutil.copytree(prepared.data_dir, target)
    return procs.novaza_env(target, f"sqlite:///{target / 'novaza.db'}", **settings)


@contextlib.contextmanager
def ai_server(env: dict[str, str], token: str) -> Iterator[procs.ServeProcess]:
    """A gateway with the model preloaded; killed at the end if the test left it running."""
    server = procs.start(env, wait_ready=False)
    try:
        procs.wait_healthy(server, START_TIMEOUT)
        deadline = time.monotonic() + 60
        while model_health(server, token)["state"] != "ready":
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.05)
        yield server
    finally:
        server.kill_group()


def model_health(server: procs.ServeProcess, token: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/ai/health", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    model: dict[str, Any] = answer.json()["models"][0]
    return model


async def events(response: httpx.Response) -> AsyncIterator[Any]:
    """Each ``data:`` event of a server-sent-events answer, parsed ('[DONE]' as a string)."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


def stream_body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": COUNT,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }


async def wait_for_model(server: procs.ServeProcess, token: str, **expected: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        health = await asyncio.to_thread(model_health, server, token)
        if all(health[key] == value for key, value in expected.items()):
            return
        assert time.monotonic() < deadline, (health, server.stderr())
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------- SIGTERM


async def test_sigterm_turns_readiness_503_while_a_stream_still_completes(
    prepared: Prepared, tmp_path: Path
) -> None:
    env = env_for(
        prepared,
        tmp_path / "data",
        ai_preload="true",
        shutdown_drain_delay_seconds="3",
        shutdown_grace_seconds="120",
    )
    auth = {"Authorization": f"Bearer {prepared.token}"}
    with ai_server(env, prepared.token) as server:
        assert httpx.get(f"{server.url}/health/ready").status_code == 200
        async with (
            httpx.AsyncClient(base_url=server.url, headers=auth, timeout=120) as client,
            client.stream("POST", CHAT, json=stream_body(250)) as response,
        ):
            assert response.status_code == 200
            received = events(response)
            first = await anext(received)
            assert first["choices"][0]["delta"]["role"] == "assistant"
            await wait_for_model(server, prepared.token, inFlight=1)

            server.signal(signal.SIGTERM)
            ready = await client.get("/health/ready")  # the listener is open for 3 s more
            assert ready.status_code == 503
            assert ready.json() == {"status": "draining", "checks": {}}
            assert (await client.get("/health")).status_code == 200  # alive all the same
            assert (await asyncio.to_thread(model_health, server, prepared.token))[
                "inFlight"
            ] == 1  # still generating: the stream was in flight when readiness turned
            refused = await client.post(CHAT, json={**stream_body(2), "stream": False})
            assert refused.status_code == 503, refused.text  # no new work while draining
            assert refused.json()["code"] == "AI_MODEL_UNAVAILABLE"
            assert refused.headers["retry-after"] == "1"

            rest = [event async for event in received]
        assert rest[-1] == "[DONE]", rest[-3:]
        assert rest[-2]["choices"][0]["finish_reason"] == "length"
        assert not any(isinstance(e, dict) and "error" in e for e in rest)
        assert server.wait(30) == 0, server.stderr()
    stderr = server.stderr()
    assert "Traceback" not in stderr
    assert "Cancel" not in stderr  # uvicorn's grace never ran out


async def test_sigterm_refuses_the_queued_request_and_the_grace_ends_a_stream_with_an_error(
    prepared: Prepared, tmp_path: Path
) -> None:
    env = env_for(
        prepared,
        tmp_path / "data",
        ai_preload="true",
        ai_queue_size="1",
        shutdown_grace_seconds="3",
    )
    auth = {"Authorization": f"Bearer {prepared.token}"}
    with ai_server(env, prepared.token) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, headers=auth, timeout=60) as client,
            client.stream("POST", CHAT, json=stream_body(5000)) as holding,
        ):
            received = events(holding)
            await anext(received)  # the role chunk, then text: the model is generating
            assert (await anext(received))["choices"][0]["delta"]["content"]
            queued = asyncio.create_task(
                client.post(CHAT, json={**stream_body(2), "stream": False})
            )
            await wait_for_model(server, prepared.token, queueDepth=1)

            server.signal(signal.SIGTERM)
            refused = await queued
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "AI_MODEL_UNAVAILABLE"
            assert "shutting down" in refused.json()["message"]
            assert refused.headers["retry-after"] == "1"

            rest = [event async for event in received]  # to the end: not a cut connection
        error = rest[-1]["error"]
        assert error["code"] == "AI_MODEL_UNAVAILABLE" and error["type"] == "error"
        assert "[DONE]" not in rest
        assert server.wait(15) == 0, server.stderr()
    assert "Traceback" not in server.stderr()
    assert "Cancel" not in server.stderr()  # ended by the gateway, before uvicorn's cut


# ----------------------------------------------------------------------------- workers


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def live_workers(server: procs.ServeProcess) -> list[int]:
    """uvicorn's worker processes of a supervisor (not its resource tracker)."""
    return [
        pid
        for pid in children(server.pid)
        if b"spawn_main" in cmdline(pid)
        and b"resource_tracker" not in cmdline(pid)
        and running(pid)
    ]


def wait_for_workers(server: procs.ServeProcess, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        workers = live_workers(server)
        if len(workers) == count:
            return workers
        assert time.monotonic() < deadline, (workers, server.stderr())
        time.sleep(0.05)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def start_workers(env: dict[str, str], port: int | None = None) -> procs.ServeProcess:
    server = procs.start(env, port=port, workers=2, wait_ready=False)
    try:
        procs.wait_healthy(server, START_TIMEOUT)
    except BaseException:
        server.kill_group()
        raise
    return server


@contextlib.contextmanager
def serving_workers(env: dict[str, str]) -> Iterator[procs.ServeProcess]:
    server = start_workers(env)
    try:
        yield server
    finally:
        try:
            assert server.stop(timeout=60) == 0, server.stderr()
        finally:
            server.kill_group()


def test_sigkill_of_the_supervisor_takes_its_workers_and_frees_the_port(
    prepared: Prepared, tmp_path: Path
) -> None:
    env = env_for(prepared, tmp_path / "data")
    first = start_workers(env)
    workers: list[int] = []
    try:
        workers = wait_for_workers(first, 2)
        first.signal(signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in workers):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.05)
        again = start_workers(env, port=first.port)  # binds the same port
        try:
            assert httpx.get(f"{again.url}/health/ready").status_code == 200
        finally:
            assert again.stop(timeout=60) == 0, again.stderr()
    finally:
        first.kill_group()
        for pid in workers:  # only when the test failed: workers this test started
            with contextlib.suppress(ProcessLookupError):
                if running(pid):
                    os.kill(pid, signal.SIGKILL)


def whoami(server: procs.ServeProcess, token: str, count: int) -> None:
    for _ in range(count):
        with httpx.Client() as client:  # a fresh connection: either worker may answer
            answer = client.get(
                f"{server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
            )
        assert answer.status_code == 200, answer.text


def scraped_whoami(server: procs.ServeProcess) -> float:
    return whoami_counts(httpx.get(f"{server.url}/metrics").text).get("/api/v1/whoami", 0.0)


def test_two_supervisors_on_one_data_dir_keep_their_own_counters(
    prepared: Prepared, tmp_path: Path
) -> None:
    env = env_for(prepared, tmp_path / "data")
    with serving_workers(env) as first:
        whoami(first, prepared.token, 20)
        assert scraped_whoami(first) == 20
        with serving_workers(env) as second:
            assert metrics_dir_of(second) != metrics_dir_of(first)
            whoami(second, prepared.token, 3)
            assert scraped_whoami(first) == 20  # the second's start emptied nothing
            assert scraped_whoami(second) == 3  # and counts only its own

        # a worker that counted some dies and is restarted: its counts stay, its live
        # gauges (database pool) go
        metrics_dir = metrics_dir_of(first)
        counted = per_worker_whoami(metrics_dir, tmp_path / "scratch")
        victim = next(int(stem.split("_")[1]) for stem, n in counted.items() if n > 0)
        assert list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT
        while victim in (workers := live_workers(first)) or len(workers) < 2:
            assert time.monotonic() < deadline, first.stderr()
            time.sleep(0.05)
        procs.wait_healthy(first)
        while list(metrics_dir.glob(f"gauge_live*_{victim}.db")):  # the replacement's start
            assert time.monotonic() < deadline, sorted(p.name for p in metrics_dir.iterdir())
            time.sleep(0.05)
        assert scraped_whoami(first) == 20
