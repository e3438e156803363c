"""``novaza serve --workers 2`` with MLLP on: every worker listens on the one port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from novaza_gateway.core import devkeys
from novaza_gateway.hl7.mllp import MllpDecoder, frame
from tests import procs
from tests.conftest import free_port
from tests.hl7.corpus import HL7_SETTINGS
from tests.test_process import admin_headers, copy_database

A08 = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260303140211||ADT^A08^ADT_A01|W{n:05d}|P|2.5.1\r"
    "EVN|A08|20260303140200\r"
    "PID|1||W{n}^^^STMARYS^MR||Doe^Jane||19700101|F\r"
)


async def send_all(port: int, connections: int, per_connection: int) -> list[bytes]:
    async def one(start: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        decoder, acks = MllpDecoder(1 << 20), []
        for n in range(start, start + per_connection):
            writer.write(frame(A08.format(n=n).encode()))
            got: list[bytes] = []
            while not got:
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                assert chunk, "the listener hung up"
                got = decoder.feed(chunk)
            acks += got
        writer.close()
        return acks

    batches = await asyncio.gather(*(one(c * per_connection) for c in range(connections)))
    return [ack for batch in batches for ack in batch]


def test_two_workers_share_the_mllp_port(tmp_path: Path, sqlite_template: Path) -> None:
    data_dir = tmp_path / "data"
    mllp_port = free_port()
    env = procs.novaza_env(
        data_dir, copy_database(sqlite_template, data_dir), mllp_port=str(mllp_port)
    )
    devkeys.load_or_create_key(data_dir)
    with procs.serving(env, workers=2) as server:
        tenant = {
            "slug": "feeds",
            "name": "Feeds",
            "status": "active",
            "addons": ["hl7_fhir"],
            "settings": {"hl7": HL7_SETTINGS},
        }
        created = httpx.post(
            f"{server.url}/admin/tenants/", json=tenant, headers=admin_headers(data_dir)
        )
        assert created.status_code == 201, created.text
        acks = asyncio.run(send_all(mllp_port, connections=8, per_connection=5))
        assert len(acks) == 40 and all(b"MSA|AA|" in ack for ack in acks), acks[:2]
        # each worker answers readiness for its own listener: both are serving MLLP
        for _ in range(12):
            with httpx.Client() as client:  # a fresh connection: either worker may answer
                ready = client.get(f"{server.url}/health/ready").json()
            assert ready["checks"]["mllp"]["status"] == "ok", ready
    assert "address already in use" not in server.stderr().lower()
    assert server.proc.returncode == 0
