"""The archive in S3-compatible object storage (``s3://bucket/prefix``, ADR 0037).

boto3 in threads: the blocking calls run in a pool of the store's own, sized like its
connection pool, so slow object reads never starve the loop's default pool that the rest of
the gateway uses. Uploads stage in the data dir and go up on commit (multipart past
``MULTIPART_BYTES``), durable in the store before the index row commits. Downloads stream in
``CHUNK_BYTES`` chunks with one read ahead; pydicom reads through ranged GETs
(``RangedObject``). Nothing holds a whole file, let alone a study, in memory.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from novaza_gateway.config import ArchiveConfig
from novaza_gateway.imaging.archive import storage
from novaza_gateway.imaging.archive.staging import StagedFile, StagingArea
from novaza_gateway.imaging.archive.storage import (
    ArchiveFileTruncated,
    missing_file,
    store_unavailable,
)

MAX_CONNECTIONS = 32
MULTIPART_BYTES = 16 * 1024 * 1024  # one PUT below; parts of this size above
PARTS_AT_ONCE = 4  # parts of one upload in flight (each read from the staged file as sent)
OPEN_BLOCK_BYTES = 64 * 1024  # a ranged GET per block: a DICOM header fits in the first
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
T = TypeVar("T")


def make_client(config: ArchiveConfig) -> Any:
    """A boto3 S3 client; credentials from the settings, else the standard AWS chain."""
    key_id, secret = config.s3_access_key_id, config.s3_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.s3_endpoint_url,
        region_name=config.s3_region,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            max_pool_connections=MAX_CONNECTIONS,
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": _addressing(config.s3_endpoint_url)},
        ),
    )


def _addressing(endpoint: str | None) -> str:
    """AWS itself: its default (virtual hosts); other S3-compatible stores (MinIO, Ceph,
    moto) answer path-style requests, which need no wildcard DNS."""
    if endpoint is None:
        return "auto"
    host = urlsplit(endpoint).hostname or ""
    return "auto" if host.endswith(".amazonaws.com") else "path"


class S3Storage:
    kind = "s3"

    def __init__(self, bucket: str, prefix: str, staging_root: Path, config: ArchiveConfig) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.staging = StagingArea(staging_root, durable=False)  # the store makes it durable
        self.client = make_client(config)
        self._pool = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="novaza-archive")

    def object_key(self, key: str) -> str:
        return self.prefix + key

    def stage(self) -> StagedFile:
        return self.staging.stage()

    def sweep_staging(self, older_than_seconds: float) -> int:
        return self.staging.sweep(older_than_seconds)

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, *args)

    async def commit(self, staged: StagedFile, key: str) -> None:
        await self._run(self._upload, staged, key)

    def _upload(self, staged: StagedFile, key: str) -> None:
        staged.close()
        target = {"Bucket": self.bucket, "Key": self.object_key(key)}
        try:
            if staged.size < MULTIPART_BYTES:
                # The SHA-256 the ingest computed: the store verifies the bytes it got.
                digest = base64.b64encode(bytes.fromhex(staged.sha256)).decode()
                with staged.path.open("rb") as body:
                    self.client.put_object(
                        **target, Body=body, ContentLength=staged.size, ChecksumSHA256=digest
                    )
            else:
                parts = TransferConfig(
                    multipart_threshold=MULTIPART_BYTES,
                    multipart_chunksize=MULTIPART_BYTES,
                    max_concurrency=PARTS_AT_ONCE,
                )
                self.client.upload_file(str(staged.path), **target, Config=parts)
        except (BotoCoreError, ClientError) as exc:
            raise store_unavailable(self.kind, exc) from None
        staged.path.unlink()

    async def exists(self, key: str) -> bool:
        return await self._run(self._size, key) is not None

    def _size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _error_code(exc) in NOT_FOUND:
                return None
            raise store_unavailable(self.kind, exc) from None
        except BotoCoreError as exc:
            raise store_unavailable(self.kind, exc) from None
        return int(head["ContentLength"])

    async def missing(self, sizes: Mapping[str, int]) -> list[str]:
        """HEAD requests in parallel (as many as the pool has connections)."""
        found = await asyncio.gather(*(self._run(self._size, key) for key in sizes))
        pairs = zip(sizes.items(), found, strict=True)
        return [key for (key, size), has in pairs if has is None or has < size]

    def _get(self, key: str, first: int, last: int | None) -> Any:
        byte_range = f"bytes={first}-{'' if last is None else last}"
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.object_key(key), Range=byte_range
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code in NOT_FOUND:
                raise missing_file(key) from None
            if code == "InvalidRange":  # starts past the end of the object
                raise ArchiveFileTruncated(f"{key} ends before byte {first}") from None
            raise store_unavailable(self.kind, exc) from None
        except BotoCoreError as exc:
            raise store_unavailable(self.kind, exc) from None
        return answer["Body"]

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """One ranged GET, its body read chunk by chunk in the pool, the next chunk read
        while the caller sends this one (memory: two chunks)."""
        if length == 0:
            return
        last = None if length is None else offset + length - 1
        body = await self._run(self._get, key, offset, last)
        received = 0
        pending: asyncio.Future[bytes] | None = self._read_ahead(body)
        try:
            while pending is not None:
                chunk = await pending
                pending = self._read_ahead(body) if chunk else None
                received += len(chunk)
                if chunk:
                    yield chunk
            if length is not None and received < length:
                raise ArchiveFileTruncated(f"{key} ends at byte {offset + received}")
        finally:
            if pending is None:
                body.close()
            else:  # the caller stopped early: close once the read in flight is done
                pending.add_done_callback(lambda done: _close(body, done))

    def _read_ahead(self, body: Any) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, _read_chunk, body, storage.CHUNK_BYTES)

    def open(self, key: str, size: int) -> BinaryIO:
        reader = io.BufferedReader(RangedObject(self, key, size), OPEN_BLOCK_BYTES)
        reader.peek(1)  # the first block now: a missing file fails here, not inside pydicom
        return reader

    async def check(self) -> str | None:
        def head_bucket() -> None:
            self.client.head_bucket(Bucket=self.bucket)

        await self._run(head_bucket)
        return None

    async def aclose(self) -> None:
        self.staging.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _close(body: Any, abandoned: asyncio.Future[bytes]) -> None:
    body.close()
    if not abandoned.cancelled():
        abandoned.exception()  # retrieved: no "exception was never retrieved" warning


def _read_chunk(body: Any, size: int) -> bytes:
    try:
        return bytes(body.read(size))
    except BotoCoreError as exc:  # the stream broke, or the object was shorter than sent
        raise ArchiveFileTruncated(type(exc).__name__) from None


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class RangedObject(io.RawIOBase):
    """An archived object as a seekable raw file: each read is a ranged GET of what the
    buffered reader above asks for (a block, or one large value such as Pixel Data)."""

    def __init__(self, store: S3Storage, key: str, size: int) -> None:
        self.store, self.key, self.size = store, key, size
        self.position = 0
        self.name = key  # pydicom keeps it as the dataset's filename

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self.size - self.position)
        if wanted <= 0:
            return 0
        try:
            body = self.store._get(self.key, self.position, self.position + wanted - 1)
        except ArchiveFileTruncated:
            return 0
        try:
            data = _read_chunk(body, wanted)
        finally:
            body.close()
        view[: len(data)] = data
        self.position += len(data)
        return len(data)
