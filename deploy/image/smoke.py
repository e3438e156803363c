#!/usr/bin/env python3
"""Smoke test of the gateway image, run as a container would run it (``make image-test``).

One container of IMAGE, the data dir a host directory mounted as the volume, PostgreSQL and
Redis of this machine (a dedicated database, dropped afterwards). Every command is the image's
own entrypoint with its arguments, run by ``buildah run --isolation chroot`` (``podman run``
is not available here; buildah shares the host's network, so the ports are chosen free):

  migrate; tenants create; token (dev mode, signed with the key it writes in the volume);
  serve with MLLP and MWL on; /health, /health/ready (every check ok), /metrics; whoami with
  the token (200, the tenant) and without (401); an HL7 message over MLLP (an ACK back);
  a DICOM association to the MWL SCP (answered); the image's HEALTHCHECK command; SIGTERM
  (exit 0 within the drain time); and nothing written to the root filesystem outside the
  volume, compared against a run of `true` (what buildah itself touches).

Standard library only; needs buildah, psql and dcmtk's echoscu on the host; run as root.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BUILDAH = shlex.split(os.environ.get("BUILDAH", "buildah --storage-driver vfs"))
PG_HOST = os.environ.get("SMOKE_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("SMOKE_PG_PORT", "5432")
PG_USER = os.environ.get("SMOKE_PG_USER", "postgres")
REDIS_URL = os.environ.get("SMOKE_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE = "novaza_image_smoke"
TENANT = "smoke"
VOLUME = "/var/lib/novaza"
STARTUP_SECONDS = 120  # the first start imports llama.cpp and numpy from a cold cache
DRAIN_SECONDS = 40  # the gateway drains for up to 30 s


class SmokeFailure(Exception):
    pass


def ok(what: str, detail: str = "") -> None:
    print(f"ok   {what}" + (f"  ({detail})" if detail else ""), flush=True)


def expect(condition: bool, what: str, detail: str = "") -> None:
    if not condition:
        raise SmokeFailure(f"{what}: {detail}")
    ok(what, detail)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-q", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", "postgres", "-c", sql],
        check=True,
        capture_output=True,
    )


def http(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Container:
    """One working container of the image; each ``run`` is the entrypoint with arguments."""

    def __init__(self, image: str, data_dir: Path, env: dict[str, str]) -> None:
        self.image = image
        self.data_dir = data_dir
        self.env = env
        inspected = json.loads(self._buildah("inspect", "--type", "image", image).stdout)
        self.config = inspected["Docker"]["config"]
        self.name = self._buildah("from", "--pull=never", image).stdout.strip()
        self.rootfs = Path(self._buildah("mount", self.name).stdout.strip())

    def _buildah(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BUILDAH, *args], check=True, capture_output=True, text=True)

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        flags = ["--isolation", "chroot", "-v", f"{self.data_dir}:{VOLUME}"]
        for key, value in {**self.env, **(env or {})}.items():
            flags.append(f"--env={key}={value}")
        return [*BUILDAH, "run", *flags, self.name, "--", *argv]

    def entrypoint(self, *args: str) -> list[str]:
        return [*self.config["Entrypoint"], *(args or self.config["Cmd"])]

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            self.command(self.entrypoint(*args), env), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SmokeFailure(
                f"{shlex.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        return done.stdout

    def touched_since(self, stamp: float) -> set[str]:
        """Paths in the root filesystem changed since ``stamp`` (the volume is not in it)."""
        found = subprocess.run(
            ["find", str(self.rootfs), "-xdev", "-newermt", f"@{stamp}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return {"/" + str(Path(p).relative_to(self.rootfs)) for p in found} - {"/."}

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def gateway_pid(launcher: int, entrypoint: str) -> int:
    for pid in descendants(launcher):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entrypoint.encode() in argv:
            return pid
    raise SmokeFailure("the gateway process is not among buildah run's children")


def mllp_exchange(port: int) -> bytes:
    message = (
        "MSH|^~\\&|SMOKE|SMOKE|NOVAZA|NOWHERE|20260101120000||ADT^A04^ADT_A01|SMOKE1|P|2.5.1\r"
        "PID|1||SMOKE-1^^^SMOKE^MR||TEST^SMOKE\r"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x0b" + message.encode() + b"\x1c\x0d")
        answer = b""
        while not answer.endswith(b"\x1c\x0d"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> float:
    begin = time.monotonic()
    while time.monotonic() - begin < STARTUP_SECONDS:
        if server.poll() is not None:
            raise SmokeFailure(f"serve exited {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if http(url)[0] == 200:
                return time.monotonic() - begin
        except OSError:
            pass
        time.sleep(0.5)
    raise SmokeFailure(f"no answer on {url} after {STARTUP_SECONDS} s")


def smoke(image: str, work: Path) -> None:
    data_dir = work / "data"
    data_dir.mkdir(mode=0o700)
    os.chown(data_dir, 10001, 10001)  # the image's user owns its volume
    psql(f"DROP DATABASE IF EXISTS {DATABASE}")
    psql(f"CREATE DATABASE {DATABASE}")
    port, mllp, mwl = free_port(), free_port(), free_port()
    env = {
        "NOVAZA_DATABASE_URL": f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DATABASE}",
        "NOVAZA_REDIS_URL": REDIS_URL,
        "NOVAZA_PORT": str(port),
        "NOVAZA_MLLP_PORT": str(mllp),
        "NOVAZA_MWL_PORT": str(mwl),
    }
    box = Container(image, data_dir, env)
    server = None
    try:
        config = box.config
        expect(config["User"] not in ("", "0", "root"), "runs as a non-root user", config["User"])
        ok("entrypoint", shlex.join(box.entrypoint()))

        stamp = time.time()
        time.sleep(1.1)  # mtimes in whole seconds on some filesystems
        subprocess.run(box.command(["true"]), check=True, capture_output=True)
        by_buildah = box.touched_since(stamp)

        stamp = time.time()
        time.sleep(1.1)
        out = box.run("migrate")
        expect("latest revision" in out, "migrate on PostgreSQL", out.strip())
        out = box.run(
            "tenants",
            "create",
            TENANT,
            "--name",
            "Image smoke test",
            "--addon",
            "hl7_fhir",
            "--activate",
            "--if-missing",
        )
        ok("tenants create", TENANT)
        token = box.run("token", "--tenant", TENANT, "--ttl", "600").strip()
        expect(token.count(".") == 2, "dev-mode token from the image", f"{len(token)} chars")
        expect((data_dir / "dev-signing-key.pem").exists(), "dev signing key in the volume")

        log = work / "serve.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(box.command(box.entrypoint()), stdout=sink, stderr=sink)
        base = f"http://127.0.0.1:{port}"
        took = wait_until_up(f"{base}/health", server, log)
        ok("serve: /health 200", f"up after {took:.1f} s")
        status, body = http(f"{base}/health/ready")
        checks = json.loads(body)
        summary = ", ".join(f"{k}={v['status']}" for k, v in checks["checks"].items())
        expect(status == 200 and checks["status"] == "ok", "/health/ready 200, all ok", summary)
        expect("database" in body.decode() and "redis" in body.decode(), "ready checks db+redis")
        status, body = http(f"{base}/metrics")
        expect(status == 200 and b"# TYPE" in body, "/metrics 200", f"{len(body)} bytes")
        status, body = http(f"{base}/api/v1/whoami", token)
        me = json.loads(body) if status == 200 else {}
        expect(
            status == 200 and me.get("tenant") == TENANT,
            "whoami with the token: 200",
            body.decode()[:160],
        )
        status, body = http(f"{base}/api/v1/whoami")
        expect(status == 401, "whoami without a token: 401", body.decode()[:120])

        ack = mllp_exchange(mllp)
        expect(
            b"MSA|" in ack, "MLLP: an ACK back", ack.decode(errors="replace").split("\r")[1][:40]
        )
        echo = subprocess.run(
            ["echoscu", "-v", "-aet", "SMOKE", "-aec", "NOVAZA_MWL", "127.0.0.1", str(mwl)],
            capture_output=True,
            text=True,
        )
        said = echo.stdout + echo.stderr
        expect(
            "Association Rejected" in said or "Received Echo Response" in said,
            "MWL SCP answers a DICOM association",
            "rejected: calling AE title not configured" if "Rejected" in said else "C-ECHO",
        )
        health = config["Healthcheck"]["Test"]
        expect(health[0] == "CMD", "HEALTHCHECK is exec form", shlex.join(health[1:])[:60] + "...")
        checked = subprocess.run(box.command(health[1:]), capture_output=True)
        expect(checked.returncode == 0, "HEALTHCHECK command passes inside the image")

        target = gateway_pid(server.pid, config["Entrypoint"][0])
        begin = time.monotonic()
        os.kill(target, signal.SIGTERM)
        code = server.wait(DRAIN_SECONDS)
        took = time.monotonic() - begin
        expect(code == 0, "SIGTERM: exit 0", f"after {took:.1f} s")
        server = None

        written = box.touched_since(stamp) - by_buildah
        expect(not written, "nothing written to the root filesystem", ", ".join(sorted(written)))
        ok("data volume holds", ", ".join(sorted(p.name for p in data_dir.iterdir())))
    finally:
        if server is not None and server.poll() is None:
            for pid in reversed(descendants(server.pid)):
                os.kill(pid, signal.SIGKILL)
            server.kill()
            server.wait()
        box.remove()
        psql(f"DROP DATABASE IF EXISTS {DATABASE}")


def main() -> int:
    image = sys.argv[1] if len(sys.argv) > 1 else "localhost/novaza-gateway:dev"
    for tool in ("buildah", "psql", "echoscu"):
        if not shutil.which(tool):
            print(f"need {tool} on PATH", file=sys.stderr)
            return 2
    print(f"smoke test of {image}", flush=True)
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="novaza-image-smoke-") as work:
        try:
            smoke(image, Path(work))
        except (SmokeFailure, subprocess.CalledProcessError) as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            log = Path(work) / "serve.log"
            if log.exists():
                print(log.read_text()[-3000:], file=sys.stderr)
            return 1
    print(f"image smoke test passed in {time.monotonic() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
