"""Run ``python -m novaza_gateway`` as real processes: CLI commands and ``serve``.

Each gateway process runs in its own session (process group) so that stopping it also
reaches uvicorn's worker processes; stderr goes to a file (a pipe could fill and block the
server) and is read back for log assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

NOVAZA = [sys.executable, "-m", "novaza_gateway"]
START_TIMEOUT = 30.0


def novaza_env(
    data_dir: Path,
    database_url: str | None = None,
    redis_url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The process environment: the caller's, minus any ambient NOVAZA_* or multiproc dir."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NOVAZA_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["NOVAZA_DATA_DIR"] = str(data_dir)
    env["NOVAZA_LOG_JSON"] = "true"
    env["NOVAZA_ENV"] = "test"
    if database_url:
        env["NOVAZA_DATABASE_URL"] = database_url
    if redis_url:
        env["NOVAZA_REDIS_URL"] = redis_url
    env.update({f"NOVAZA_{k.upper()}": v for k, v in extra.items()})
    return env


def run_cli(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """One ``novaza`` command; with ``check`` a non-zero exit fails with its stderr."""
    result = subprocess.run(
        [*NOVAZA, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"novaza {' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def run_cli_parallel(
    *commands: tuple[dict[str, str], tuple[str, ...]], timeout: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """Several independent ``novaza`` commands at once (each pays ~1 s of imports)."""
    started = [
        (
            args,
            subprocess.Popen(
                [*NOVAZA, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for env, args in commands
    ]
    results = []
    try:
        for args, proc in started:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    finally:
        for _, proc in started:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    return results


def prepare(env: dict[str, str], *slugs: str, plan: str = "starter") -> None:
    """Migrate the database and create each tenant, active, through the CLI."""
    run_cli(env, "migrate")
    for slug in slugs:
        run_cli(
            env, "tenants", "create", slug, "--name", slug.title(), "--plan", plan, "--activate"
        )


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON; a line that is not JSON fails the caller."""
        lines = []
        for line in self.stderr().splitlines():
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    raise AssertionError(f"log line is not JSON: {line!r}") from None
        return lines

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """Last resort: SIGKILL the process group this process leads (its workers too).

        Only while the leader is not reaped yet: until then its id cannot name anything else.
        """
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; SIGKILL the group if it does not exit in time. Returns the status.

        uvicorn's supervisor joins its workers before it exits, so a leader that exited on its
        own leaves none behind.
        """
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
                raise AssertionError(
                    f"gateway {self.pid} ignored SIGTERM for {timeout}s\n{self.stderr()}"
                ) from None
        return int(self.proc.returncode)


def start(
    env: dict[str, str],
    *args: str,
    port: int | None = None,
    workers: int = 1,
    wait_ready: bool = True,
) -> ServeProcess:
    """Start ``novaza serve`` on a free port and wait until ``/health`` answers 200."""
    port = port or free_port()
    data_dir = Path(env["NOVAZA_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = data_dir / f"serve-{port}.stderr"
    command = [*NOVAZA, "serve", "--port", str(port), *args]
    if workers > 1:
        command += ["--workers", str(workers)]
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    server = ServeProcess(proc, port, stderr_path, env)
    if wait_ready:
        try:
            wait_healthy(server)
        except BaseException:
            server.kill_group()
            raise
    return server


def wait_healthy(server: ServeProcess, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(
                f"gateway exited with {server.proc.returncode} before answering\n{server.stderr()}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"gateway did not answer /health within {timeout}s\n{server.stderr()}")


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str, workers: int = 1) -> Iterator[ServeProcess]:
    """A gateway process for the ``with`` block; always stopped (killed if it must be)."""
    server = start(env, *args, workers=workers)
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill_group()
