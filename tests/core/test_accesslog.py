"""The access log's batched JSON lines: same fields as the logging path, one write per turn."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator

import orjson
import pytest

from novaza_gateway.core import accesslog
from novaza_gateway.core.accesslog import AccessLineWriter

FIELDS = {
    "method": "GET",
    "route": "/api/v1/whoami",
    "status": 200,
    "durationMs": 0.1,
    "tenant": "t",
}


class CountingPipe:
    def __init__(self) -> None:
        self.read_fd, self.fd = os.pipe()
        self.writes = 0

    def lines(self) -> list[dict[str, object]]:
        os.close(self.fd)
        with os.fdopen(self.read_fd, "rb") as reader:
            return [orjson.loads(line) for line in reader.read().splitlines()]


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingPipe]:
    target = CountingPipe()
    real_write = os.write

    def counting_write(fd: int, data: bytes | memoryview) -> int:
        if fd == target.fd:
            target.writes += 1
        return real_write(fd, data)

    monkeypatch.setattr(accesslog.os, "write", counting_write)
    monkeypatch.setattr(accesslog.log, "level", logging.INFO)  # as configure_logging sets it
    accesslog.log.manager._clear_cache()
    accesslog.use_json_lines(target.fd)
    yield target
    accesslog.use_json_lines(None)
    accesslog.log.manager._clear_cache()


async def test_lines_of_one_loop_turn_leave_in_one_write(pipe: CountingPipe) -> None:
    for n in range(5):
        accesslog.access(f"req-{n}", {**FIELDS, "status": 200 + n})
    assert pipe.writes == 0  # nothing written inside the turn
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert pipe.writes == 1
    lines = pipe.lines()
    assert [line["requestId"] for line in lines] == [f"req-{n}" for n in range(5)]
    first = lines[0]
    assert first["logger"] == "novaza.access" and first["msg"] == "request"
    assert first["level"] == "info" and str(first["ts"]).endswith("+00:00")
    assert {k: first[k] for k in FIELDS} == FIELDS


async def test_a_turn_that_never_yields_still_writes(pipe: CountingPipe) -> None:
    for n in range(accesslog.MAX_BATCH + 3):
        accesslog.access(f"req-{n}", FIELDS)
    assert pipe.writes == 1  # the full batch, before the turn ends
    await asyncio.sleep(0)
    assert pipe.writes == 2
    assert len(pipe.lines()) == accesslog.MAX_BATCH + 3


def test_without_a_loop_a_line_is_written_at_once(pipe: CountingPipe) -> None:
    accesslog.access("sync", FIELDS)
    assert pipe.writes == 1
    assert pipe.lines()[0]["requestId"] == "sync"


def test_a_closed_descriptor_does_not_fail_the_request() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    writer = AccessLineWriter(write_fd)
    writer.write(dict(FIELDS))  # no loop: written (and failing) at once, silently
    assert writer._lines == []  # dropped, not kept to grow


def test_without_json_lines_the_logging_module_gets_the_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    accesslog.use_json_lines(None)
    with caplog.at_level("INFO", logger="novaza.access"):
        accesslog.access("via-logging", FIELDS)
    [record] = [r for r in caplog.records if r.name == "novaza.access"]
    assert record.getMessage() == "request" and record.__dict__["route"] == FIELDS["route"]
