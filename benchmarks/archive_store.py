"""The archive store: STOW-RS and WADO-RS series throughput with the archive in the data dir
(the baseline) and in S3 (``s3://``), in one run, through a real ``novaza serve`` each.

Object storage cannot be reached here: the S3 side is moto's standalone server
(``moto_server``, in-memory, a Python process on the same two CPUs), the stand-in for
S3-compatible storage. Its figures are a floor for the gateway's S3 path, not a prediction
of AWS or MinIO: moto's own CPU is in them.

Run: ``.venv/bin/python benchmarks/archive_store.py [--mb 48] [--side 1024] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx

from imaging import cli, cpu_seconds, env_for, pull, rss_kib, serve, setup_tenant

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import free_port
from tests.imaging.dicom import make_instance, multipart, uid

STOW_BYTES_PER_REQUEST = 10 * 10**6
KEY_ID, SECRET, REGION = "bench", "bench-secret", "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


def read_direct(endpoint: str, bucket: str) -> float:
    """MB/s of GETting every archived object straight from the store with boto3, 1 MiB
    reads, one after another: what the store gives a client with no gateway in between."""
    client = s3_client(endpoint)
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    size, began = 0, time.perf_counter()
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        while chunk := body.read(1024 * 1024):
            size += len(chunk)
    return size / (time.perf_counter() - began) / 1e6


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return {
        "NOVAZA_ARCHIVE_URL": f"s3://{bucket}/archive",
        "NOVAZA_ARCHIVE_S3_ENDPOINT_URL": endpoint,
        "NOVAZA_ARCHIVE_S3_REGION": REGION,
        "NOVAZA_ARCHIVE_S3_ACCESS_KEY_ID": KEY_ID,
        "NOVAZA_ARCHIVE_S3_SECRET_ACCESS_KEY": SECRET,
    }


def bodies(megabytes: int, side: int) -> tuple[str, str, list[tuple[bytes, str]], int]:
    """The study as STOW bodies of ~10 MB, built before the clock starts."""
    study, series = uid(), uid()
    per_instance = 2 * side * side
    count = -(-megabytes * 10**6 // per_instance)
    per_request = max(1, STOW_BYTES_PER_REQUEST // per_instance)
    instances = [
        make_instance(study=study, series=series, rows=side, columns=side, instance_number=i)
        for i in range(count)
    ]
    found = [
        multipart(instances[start : start + per_request]) for start in range(0, count, per_request)
    ]
    return study, series, found, sum(map(len, instances))


def run_store(extra: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "data", free_port()
        env = {**env_for(data_dir, None, port), **extra}
        cli(env, "migrate")
        tenant = ["--name", "Bench", "--addon", "medical_imaging", "--activate"]
        cli(env, "tenants", "create", "bench", *tenant)
        with serve(env, port) as proc:
            base = f"http://127.0.0.1:{port}"
            auth = setup_tenant(base, data_dir, "bench")
            study, series, requests, size = bodies(args.mb, args.side)
            cpu0, began = cpu_seconds(proc.pid), time.perf_counter()
            for body, ctype in requests:
                response = httpx.post(
                    f"{base}/med/stow/studies",
                    content=body,
                    headers={**auth, "Content-Type": ctype},
                    timeout=300,
                )
                response.raise_for_status()
            stow_s, stow_cpu = time.perf_counter() - began, cpu_seconds(proc.pid) - cpu0
            path = f"/med/wado/studies/{study}/series/{series}"
            rates, cpus, firsts = [], [], []
            for _ in range(args.rounds):
                cpu0 = cpu_seconds(proc.pid)
                received, first, elapsed = pull(port, path, auth)
                assert received > size, (received, size)
                rates.append(size / elapsed / 1e6)
                cpus.append((cpu_seconds(proc.pid) - cpu0) * 1000)
                firsts.append(first * 1000)
            return {
                "stow_mb_s": size / stow_s / 1e6,
                "stow_cpu_ms_per_mb": stow_cpu * 1000 / (size / 1e6),
                "wado_mb_s": statistics.median(rates),
                "wado_cpu_ms_per_mb": statistics.median(cpus) / (size / 1e6),
                "ttfb_ms": statistics.median(firsts),
                "peak_rss_mib": rss_kib(proc.pid) / 1024,
                "mb": size / 1e6,
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=48, help="study size (MB)")
    parser.add_argument("--side", type=int, default=1024, help="rows = columns (16-bit)")
    parser.add_argument("--rounds", type=int, default=5, help="WADO retrieves per store")
    args = parser.parse_args()
    results = {"dir": run_store({}, args)}
    with moto_server() as endpoint:
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        results["s3 (moto)"] = run_store(s3_env(endpoint, bucket), args)
        direct = statistics.median(read_direct(endpoint, bucket) for _ in range(args.rounds))
    instances = -(-args.mb * 10**6 // (2 * args.side * args.side))
    print(f"study: {results['dir']['mb']:.1f} MB, {instances} instances; {args.rounds} rounds")
    header = "store", "STOW MB/s", "CPU ms/MB", "WADO MB/s", "CPU ms/MB", "TTFB ms", "peak RSS"
    print("| " + " | ".join(header) + " |")
    for name, r in results.items():
        print(
            f"| {name} | {r['stow_mb_s']:.1f} | {r['stow_cpu_ms_per_mb']:.1f} "
            f"| {r['wado_mb_s']:.1f} | {r['wado_cpu_ms_per_mb']:.1f} | {r['ttfb_ms']:.1f} "
            f"| {r['peak_rss_mib']:.0f} MiB |"
        )
    s3, local = results["s3 (moto)"], results["dir"]
    print(
        f"s3 / dir: STOW {s3['stow_mb_s'] / local['stow_mb_s']:.2f}, "
        f"WADO {s3['wado_mb_s'] / local['wado_mb_s']:.2f}; boto3 reading the same objects "
        f"from moto directly: {direct:.1f} MB/s (gateway WADO / direct "
        f"{s3['wado_mb_s'] / direct:.2f})"
    )


if __name__ == "__main__":
    main()
