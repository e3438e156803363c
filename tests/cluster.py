"""N ``novaza serve`` replicas on one PostgreSQL and one Redis, behind a real HAProxy.

The scenario test (tests/test_replicas.py) and the benchmark (benchmarks/replicas.py) share it.
Each replica keeps its own ``NOVAZA_DATA_DIR``; everything the replicas must agree on is set
explicitly and identically: the SSO's JWKS (a file; tokens are signed with its private key),
the imaging URL signing keys, the Personeo token secret, the tenant-secrets keys and the shared
archive (``NOVAZA_ARCHIVE_URL``; ignored by a gateway that does not know the setting yet).

HAProxy (Debian's, run in the foreground) balances HTTP round robin with health checks on
``/health/ready`` (``inter 500ms fall 2 rise 2``) and MLLP in TCP mode, with the MLLP servers
checked on their replica's readiness too. Each HTTP answer names the replica that served it in
``X-Served-By`` (HAProxy's own error answers included), and every request is logged on HAProxy's
stdout as one line: ``server status termination-state method path``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import ADMIN_SCOPE, TENANT_SCOPES
from tests import procs
from tests.conftest import free_port

HAPROXY = "/usr/sbin/haproxy"
HAPROXY_CONFIG = """\
global
    log stdout format raw local0
    maxconn 4096

defaults
    log global
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout check 2s
    retries 2

frontend http
    mode http
    bind 127.0.0.1:{http_port}
    option httplog
    log-format "%s %ST %tsc %HM %HU"
    http-after-response set-header X-Served-By %[srv_name]
    default_backend gateways

backend gateways
    mode http
    balance roundrobin
    option httpchk GET /health/ready
    # only a connection that was never made is tried elsewhere: a request a replica may have
    # started is never sent twice (POSTs are not idempotent)
    option redispatch
    retry-on conn-failure
    # a request sent on an idle pooled connection to a replica that died meanwhile would be
    # lost without an answer (HAProxy then closes the client connection for the client to
    # retry): one server connection per request keeps failures to requests truly in flight
    http-reuse never
    default-server inter 500ms fall 2 rise 2
{http_servers}

frontend mllp
    mode tcp
    bind 127.0.0.1:{mllp_port}
    option tcplog
    default_backend mllp

backend mllp
    mode tcp
    balance roundrobin
    option httpchk GET /health/ready
    option redispatch
    default-server inter 500ms fall 2 rise 2
{mllp_servers}
"""


def shared_settings(root: Path) -> dict[str, str]:
    """What every replica must share, as ``novaza_env`` keywords (one value per cluster)."""
    sso = root / "sso"
    sso.mkdir(parents=True, exist_ok=True)
    jwks = sso / "jwks.json"
    jwks.write_text(devkeys.jwks_json(sso))  # the private key stays in sso/ to sign tokens
    archive = root / "archive"
    archive.mkdir(exist_ok=True)
    aes_key = base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        "jwks_file": str(jwks),
        "jwt_issuer": devkeys.DEV_ISSUER,
        "imaging_signing_keys": f"k1:{secrets.token_urlsafe(32)}",
        "rooms_token_secret": secrets.token_urlsafe(32),
        "secrets_keys": f"s1:{aes_key}",
        "archive_url": archive.as_uri(),
    }


@dataclass
class Replica:
    name: str
    port: int
    mllp_port: int
    env: dict[str, str] = field(repr=False)
    server: procs.ServeProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["NOVAZA_DATA_DIR"])

    def start(self, wait: bool = True) -> None:
        self.server = procs.start(self.env, port=self.port, wait_ready=False)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/health/ready`` answers 200 (HAProxy's check would admit it)."""
        assert self.server is not None
        procs.wait_healthy(self.server, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout}s\n{self.server.stderr()}")

    def kill(self) -> None:
        """SIGKILL the replica's process group: no drain, no flush, no goodbye."""
        assert self.server is not None
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait(10)

    def stop(self) -> None:
        if self.server is not None:
            try:
                self.server.stop()
            finally:
                self.server.kill_group()

    def cpu_seconds(self) -> float:
        """User + system CPU of the replica's process so far (from /proc)."""
        assert self.server is not None
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HaProxy:
    """HAProxy in the foreground over some replicas; its stdout (the request log) in a file."""

    def __init__(self, root: Path, replicas: list[Replica]) -> None:
        self.http_port, self.mllp_port = free_port(), free_port()
        self.config = root / f"haproxy-{self.http_port}.cfg"
        self.log = root / f"haproxy-{self.http_port}.log"
        self.config.write_text(
            HAPROXY_CONFIG.format(
                http_port=self.http_port,
                mllp_port=self.mllp_port,
                http_servers="\n".join(
                    f"    server {r.name} 127.0.0.1:{r.port} check" for r in replicas
                ),
                mllp_servers="\n".join(
                    f"    server {r.name} 127.0.0.1:{r.mllp_port} check port {r.port}"
                    for r in replicas
                ),
            )
        )
        self.replicas = replicas
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 20.0) -> None:
        check = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # ready once HAProxy routes to every replica (each passed its readiness checks)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if self.servers_up() == {r.name for r in self.replicas}:
                return
            time.sleep(0.2)
        raise AssertionError(f"HAProxy did not see every replica up\n{self.log.read_text()}")

    def servers_up(self) -> set[str]:
        """The replicas HAProxy routes to: those that answered a round of /health/ready."""
        seen = set()
        for _ in range(len(self.replicas) * 2):
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(f"{self.url}/health/ready", timeout=2)
                if answer.status_code == 200:
                    seen.add(answer.headers.get("x-served-by", ""))
        return seen

    def requests(self) -> list[tuple[str, int, str, str, str]]:
        """The HTTP request log: (server, status, termination state, method, path)."""
        rows = []
        for line in self.log.read_text(errors="replace").splitlines():
            parts = line.split(" ")
            if len(parts) == 5 and parts[1].lstrip("-").isdigit():
                rows.append((parts[0], int(parts[1]), parts[2], parts[3], parts[4]))
        return rows

    def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Cluster:
    """``count`` replicas (r0, r1, ...) of one gateway on one database and one Redis."""

    def __init__(
        self, root: Path, database_url: str, redis_url: str, count: int = 3, **settings: str
    ) -> None:
        self.root = root
        self.sso = root / "sso"
        shared = {**shared_settings(root), **settings}
        self.replicas = []
        for n in range(count):
            port, mllp_port = free_port(), free_port()
            env = procs.novaza_env(
                root / f"r{n}", database_url, redis_url, mllp_port=str(mllp_port), **shared
            )
            self.replicas.append(Replica(f"r{n}", port, mllp_port, env))
        self.env = self.replicas[0].env

    def start(self) -> None:
        for replica in self.replicas:  # all at once: each pays a second or two of imports
            replica.start(wait=False)
        for replica in self.replicas:
            replica.wait_ready()

    def stop(self) -> None:
        errors = []
        for replica in self.replicas:
            try:
                replica.stop()
            except AssertionError as error:  # stop every replica, then report
                errors.append(error)
        if errors:
            raise errors[0]

    def balancer(self, count: int | None = None) -> HaProxy:
        """A started HAProxy over the first ``count`` replicas (all by default)."""
        proxy = HaProxy(self.root, self.replicas[:count])
        proxy.start()
        return proxy

    def token(self, tenant: str | None, scopes: list[str] | None = None) -> str:
        if tenant is None:
            return devkeys.mint_token(
                self.sso, subject="admin-1", scopes=[ADMIN_SCOPE], tenant=None
            )
        return devkeys.mint_token(
            self.sso, subject="user-1", scopes=scopes or TENANT_SCOPES, tenant=tenant
        )

    def auth(self, tenant: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}"}

    def create_tenant(self, base_url: str, slug: str, **fields: Any) -> dict[str, Any]:
        body = {"slug": slug, "name": slug.title(), "status": "active", **fields}
        answer = httpx.post(
            f"{base_url}/admin/tenants/", json=body, headers=self.auth(None), timeout=30
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


@contextlib.contextmanager
def running(
    root: Path, database_url: str, redis_url: str, count: int = 3, **settings: str
) -> Iterator[Cluster]:
    """A started cluster for the ``with`` block; every replica stopped (killed if it must be)."""
    cluster = Cluster(root, database_url, redis_url, count, **settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def balanced(cluster: Cluster, count: int | None = None) -> Iterator[HaProxy]:
    proxy = cluster.balancer(count)
    try:
        yield proxy
    finally:
        proxy.stop()
