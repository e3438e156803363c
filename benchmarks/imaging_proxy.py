"""Imaging proxy mode: WADO-RS retrieve of a ~50 MB study from a real Orthanc (DICOMweb
plugin) through ``novaza serve`` in proxy mode vs straight from Orthanc, in the same run.

Reports each path's throughput (median over interleaved rounds), their ratio (target
>= 0.8), time to first byte, the gateway's RSS before the retrieves and its peak (VmHWM),
and the STOW of the same study through the gateway. A third path, a bare relay (a dozen
lines of ASGI streaming the same httpx client's answer, on the same uvicorn), tells what
relaying through httpx costs by itself, apart from the gateway's auth, audit and layers.
Needs Debian's ``orthanc`` and ``orthanc-dicomweb``.

Run: ``.venv/bin/python benchmarks/imaging_proxy.py [--mb 50] [--side 1024] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import free_port
from tests.imaging.dicom import make_instance, uid
from tests.imaging.orthanc import Orthanc, run_orthanc

from imaging import cli, env_for, rss_kib, serve  # the WADO benchmark's helpers
from novaza_gateway.core import devkeys
from novaza_gateway.core.policy import TENANT_SCOPES

CHUNK = 1024 * 1024


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Route:
    """One way to the study, and what each retrieve over it measured."""

    name: str
    port: int
    path: str
    headers: dict[str, str]
    rates: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def pull(port: int, path: str, headers: dict[str, str]) -> tuple[int, float, float]:
    """One GET over a raw socket (HTTP/1.1, then close): body bytes (chunked framing
    included: a few bytes per MiB), seconds to the first byte and to the last. Reads land in
    one reused buffer, so the client costs far less than either server."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    request = "\r\n".join([*lines, *(f"{k}: {v}" for k, v in headers.items()), "", ""])
    buffer = bytearray(CHUNK)
    view, received, head, first = memoryview(buffer), 0, b"", 0.0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        began = time.perf_counter()
        conn.sendall(request.encode())
        while got := conn.recv_into(view):
            first = first or time.perf_counter() - began
            if len(head) < 8192 and b"\r\n\r\n" not in head:
                head += bytes(buffer[:got])
            received += got
        elapsed = time.perf_counter() - began
    status, _, rest = head.partition(b"\r\n")
    header_bytes, _, _ = rest.partition(b"\r\n\r\n")
    if b" 200 " not in status:
        raise RuntimeError(f"{status.decode()} from port {port}")
    body = received - len(status) - len(header_bytes) - 6
    declared = re.search(rb"(?im)^content-length:\s*(\d+)", header_bytes)
    if declared is not None and int(declared.group(1)) != body:
        raise RuntimeError(f"port {port}: {body} bytes, Content-Length {declared.group(1)!r}")
    return body, first, elapsed


def store_study(base: str, auth: dict[str, str], megabytes: int, side: int) -> tuple[str, float]:
    """At least ``megabytes`` of ``side`` x ``side`` 16-bit instances, stored by STOW through
    the gateway (so into Orthanc) in one streamed request. Answers the study and MB/s."""
    study, series = uid(), uid()
    count = -(-megabytes * 10**6 // (2 * side * side))
    sop = "1.2.826.0.1.3680043.9.7.2.10000000000000000000"
    template = make_instance(study=study, series=series, sop=sop, rows=side, columns=side)
    boundary = "bench-proxy"

    def body() -> Iterator[bytes]:
        for i in range(count):
            data = template.replace(sop.encode(), f"{sop[:-20]}1{i + 1:019d}".encode())
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    began = time.perf_counter()
    answer = httpx.post(
        f"{base}/med/stow/studies",
        content=body(),
        headers={**auth, "Content-Type": ctype},
        timeout=600,
    )
    elapsed = time.perf_counter() - began
    answer.raise_for_status()
    return study, count * len(template) / elapsed / 1e6


def tenant(base: str, data_dir: Path, orthanc: Orthanc) -> dict[str, str]:
    admin = devkeys.mint_token(data_dir, subject="bench", scopes=["platform:admin"], tenant=None)
    answer = httpx.put(
        f"{base}/admin/tenants/bench",
        json={
            "rateLimit": {"ratePerSecond": 100000, "burst": 100000},
            "settings": {"imaging": orthanc.settings()},
        },
        headers={"Authorization": f"Bearer {admin}"},
    )
    answer.raise_for_status()
    token = devkeys.mint_token(
        data_dir, subject="bench", scopes=list(TENANT_SCOPES), tenant="bench"
    )
    return {"Authorization": f"Bearer {token}"}


def relay(port: int, upstream: str, username: str, password: str) -> None:
    """The bare relay: GET ``/studies/...`` streamed from ``upstream`` (subprocess entry)."""
    import uvicorn

    from novaza_gateway.imaging.upstream import ClientLimits, UpstreamClients

    UpstreamClients(ClientLimits())  # the same read size as the gateway's clients
    client = httpx.AsyncClient(auth=(username, password), timeout=60)

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = client.build_request(
            "GET", upstream + str(scope["path"]), headers={"accept-encoding": "identity"}
        )
        response = await client.send(request, stream=True)
        headers = [
            (k.encode(), v.encode())
            for k, v in response.headers.items()
            if k in ("content-type", "content-length")
        ]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await response.aclose()

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def raw_relay(port: int, upstream: str, username: str, password: str) -> None:
    """The ceiling of any Python relay here: asyncio streams, no HTTP client library (the
    upstream's headers read by hand, then its bytes copied through as they come)."""
    import asyncio

    import uvicorn

    host, _, rest = upstream.removeprefix("http://").partition(":")
    upstream_port, _, root = rest.partition("/")
    basic = base64.b64encode(f"{username}:{password}".encode()).decode()

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        if scope["type"] != "http":
            return
        reader, writer = await asyncio.open_connection(host, int(upstream_port), limit=CHUNK)
        writer.write(
            f"GET /{root}{scope['path']} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Authorization: Basic {basic}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        keep = ("content-type", "content-length")
        headers = [
            (name.strip().lower().encode(), value.strip().encode())
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
            if name.strip().lower() in keep
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        while chunk := await reader.read(CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        writer.close()

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def main() -> None:
    if sys.argv[1] in ("--relay", "--raw-relay"):
        serve_relay = relay if sys.argv[1] == "--relay" else raw_relay
        serve_relay(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--side", type=int, default=1024, help="1024: 2 MiB instances")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "data", free_port()
        env = env_for(data_dir, None, port)
        cli(env, "migrate")
        cli(env, "tenants", "create", "bench", "--name", "Bench", "--addon", "medical_imaging",
            "--activate")  # fmt: skip
        relay_procs: list[subprocess.Popen[bytes]] = []
        with run_orthanc(Path(tmp) / "orthanc", "bench") as orthanc, serve(env, port) as proc:
            base = f"http://127.0.0.1:{port}"
            auth = tenant(base, data_dir, orthanc)
            study, stow_rate = store_study(base, auth, args.mb, args.side)
            basic = base64.b64encode(f"{orthanc.username}:{orthanc.password}".encode()).decode()
            orthanc_port = int(orthanc.url.rsplit(":", 1)[1])
            relays = {}
            for kind in ("--relay", "--raw-relay"):
                relays[kind] = free_port()
                relay_procs.append(subprocess.Popen(
                    [sys.executable, __file__, kind, str(relays[kind]), orthanc.dicomweb,
                     orthanc.username, orthanc.password], stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                wait_port(relays[kind])
            paths = [
                Route("orthanc direct", orthanc_port, f"/dicom-web/studies/{study}",
                      {"Authorization": f"Basic {basic}"}),
                Route("gateway proxy", port, f"/med/wado/studies/{study}", auth),
                Route("bare relay", relays["--relay"], f"/studies/{study}", {}),
                Route("raw relay", relays["--raw-relay"], f"/studies/{study}", {}),
            ]  # fmt: skip
            for way in paths:  # warm both: page cache, Orthanc's index, the pooled connection
                pull(way.port, way.path, way.headers)
            rss_before = rss_kib(proc.pid, "VmRSS")
            for _ in range(args.rounds):
                for way in paths:
                    size, first, elapsed = pull(way.port, way.path, way.headers)
                    way.rates.append(size / elapsed / 1e6)
                    way.ttfb_ms.append(first * 1000)
                    way.sizes.append(size)
            peak = rss_kib(proc.pid)
            for relay_proc in relay_procs:
                relay_proc.terminate()
                relay_proc.wait(timeout=10)
        report(paths, stow_rate, rss_before, peak, args)


def report(
    paths: list[Route], stow_rate: float, rss_before: int, peak: int, args: argparse.Namespace
) -> None:
    direct, proxied, bare, raw = paths
    print(
        f"WADO-RS retrieve of one {direct.sizes[0] / 1e6:.1f} MB study "
        f"({args.side}x{args.side} 16-bit instances), {args.rounds} interleaved rounds, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'path':16s} {'MB/s median':>11s} {'min':>7s} {'max':>7s} {'TTFB ms':>8s}")
    for way in paths:
        print(
            f"{way.name:16s} {statistics.median(way.rates):11.0f} {min(way.rates):7.0f} "
            f"{max(way.rates):7.0f} {statistics.median(way.ttfb_ms):8.1f}"
        )
    ratio = statistics.median(proxied.rates) / statistics.median(direct.rates)
    print(f"ratio proxied/direct: {ratio:.2f} (target >= 0.8)")
    bare_ratio = statistics.median(bare.rates) / statistics.median(direct.rates)
    raw_ratio = statistics.median(raw.rates) / statistics.median(direct.rates)
    print(f"ratio bare httpx relay/direct: {bare_ratio:.2f}; raw asyncio relay: {raw_ratio:.2f}")
    print(
        f"gateway RSS: {rss_before / 1024:.0f} MiB before the retrieves, peak {peak / 1024:.0f} MiB"
    )
    print(f"STOW of the study through the gateway into Orthanc: {stow_rate:.0f} MB/s")


if __name__ == "__main__":
    main()
