"""The archive stores under test: the data dir (default), a shared ``file://`` directory,
and ``s3://`` on moto's standalone S3 server — the stand-in for object storage, which
cannot be reached here (a real process over HTTP, started once per session on a free port).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.conftest import free_port, need

REGION = "us-east-1"
KEY_ID, SECRET = "novaza-test", "novaza-test-secret"  # moto takes any credentials


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def new_bucket(self) -> str:
        name = f"archive-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self) -> dict[str, Any]:
        """The gateway settings that point at this server."""
        return {
            "archive_s3_endpoint_url": self.endpoint,
            "archive_s3_region": REGION,
            "archive_s3_access_key_id": KEY_ID,
            "archive_s3_secret_access_key": SECRET,
        }

    def env(self) -> dict[str, str]:
        return {f"NOVAZA_{name.upper()}": value for name, value in self.settings().items()}


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    executable = Path(sys.executable).parent / "moto_server"
    need(executable.exists(), "moto_server is not installed in the virtualenv")
    port = free_port()
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)],
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
                assert time.monotonic() < deadline, "moto_server did not start"
                assert process.poll() is None, "moto_server exited"
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class Store:
    """One store's settings for a gateway, and a way to reach its files behind its back."""

    kind: str  # "dir", "file" or "s3"
    settings: dict[str, Any]
    root: Path | None  # a directory store's root (None: s3, or the data dir's default)
    s3: S3Server | None = None
    bucket: str = ""
    prefix: str = ""

    def files(self, data_dir: Path) -> dict[str, bytes]:
        """Every archived file, by key."""
        if self.s3 is not None:
            client = self.s3.client()
            found = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
            return {
                item["Key"][len(self.prefix) :]: client.get_object(
                    Bucket=self.bucket, Key=item["Key"]
                )["Body"].read()
                for item in found.get("Contents", [])
            }
        root = self.root or data_dir / "imaging"
        return {
            str(path.relative_to(root)): path.read_bytes()
            for path in root.rglob("*.dcm")
            if ".staging" not in path.parts
        }

    def replace(self, data_dir: Path, key: str, data: bytes | None) -> None:
        """Overwrite an archived file (``None``: delete it)."""
        if self.s3 is not None:
            client = self.s3.client()
            if data is None:
                client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
            else:
                client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
            return
        path = (self.root or data_dir / "imaging") / key
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)


def make_store(kind: str, tmp_path: Path, s3: S3Server | None) -> Store:
    if kind == "dir":
        return Store("dir", {}, None)
    if kind == "file":
        root = tmp_path / "shared-archive"
        return Store("file", {"archive_url": f"file://{root}"}, root)
    assert s3 is not None
    bucket, prefix = s3.new_bucket(), "site-a/dicom/"
    settings = {"archive_url": f"s3://{bucket}/{prefix}", **s3.settings()}
    return Store("s3", settings, None, s3, bucket, prefix)


@pytest.fixture(params=["dir", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    s3 = request.getfixturevalue("moto_s3") if request.param == "s3" else None
    return make_store(request.param, tmp_path, s3)


@pytest.fixture(params=["file", "s3"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The stores several replicas can share."""
    s3 = request.getfixturevalue("moto_s3") if request.param == "s3" else None
    return make_store(request.param, tmp_path, s3)
