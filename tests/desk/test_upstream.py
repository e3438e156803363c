"""Upstream mode: changed contacts are pushed to the tenant's Desk from the outbox, over TCP
to a real HTTP server started here, with retries; the API key is write-only."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from novaza_gateway.desk.models import DeskOutboxEntry
from tests.conftest import free_port, gateway_settings, start_gateway
from tests.desk.conftest import READ, Desk, contact, with_tenants

API_KEY = "desk-key-0123456789"


@dataclass
class FakeDesk:
    """Answers the scripted statuses in turn (then 200) and records every request."""

    script: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    url: str = ""

    async def batch(self, request: Request) -> JSONResponse:
        self.requests.append((dict(request.headers), await request.json()))
        status = self.script.pop(0) if self.script else 200
        return JSONResponse({"ok": status == 200}, status_code=status)


@pytest.fixture
def fake_desk() -> Iterator[FakeDesk]:
    desk = FakeDesk()
    app = Starlette(routes=[Route("/api/v2/contacts/batch", desk.batch, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake Desk did not start"
        time.sleep(0.02)
    desk.url = f"http://127.0.0.1:{port}/api/v2"
    yield desk
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def upstream(tmp_path: Path, db_url: str, fake_desk: FakeDesk) -> AsyncIterator[Desk]:
    settings = gateway_settings(
        tmp_path / "data",
        db_url,
        desk_outbox_poll_seconds=0.05,
        desk_outbox_backoff_seconds=0.3,
        desk_outbox_backoff_max_seconds=0.3,
        desk_outbox_max_attempts=3,
    )
    async for gw in start_gateway(settings):
        desk_settings = {"baseUrl": fake_desk.url, "apiKey": API_KEY}
        yield await with_tenants(gw, settings={"desk": desk_settings})


async def sync_status(desk: Desk, contact_id: str, wanted: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while True:
        status: str = (await desk.get(contact_id)).json()["syncStatus"]
        if status == wanted or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def outbox(desk: Desk) -> list[DeskOutboxEntry]:
    async with desk.gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(select(DeskOutboxEntry).order_by(DeskOutboxEntry.created_at))
        return list(rows.scalars())


async def test_changed_contacts_are_pushed_and_retried_after_a_failure(
    upstream: Desk, fake_desk: FakeDesk
) -> None:
    fake_desk.script = [503]
    patient = await upstream.patient(upstream.tenant_id, "MRN-9")
    answer = await upstream.sync([contact("u1", patientId=patient), contact("u2")])
    ids = [r["contactId"] for r in answer["results"]]
    assert await sync_status(upstream, ids[0], "pending", 0) == "pending"
    for contact_id in ids:
        assert await sync_status(upstream, contact_id, "synced") == "synced"
    assert len(fake_desk.requests) == 2  # the 503, then the retry that was accepted
    for headers, body in fake_desk.requests:
        assert headers["authorization"] == f"Bearer {API_KEY}"
        assert [(c["externalId"], c["version"]) for c in body["contacts"]] == [
            ("u1", 1),
            ("u2", 1),
        ]
    assert fake_desk.requests[0][1]["contacts"][0]["patientId"] == patient
    rows = await outbox(upstream)
    assert [(r.status, r.attempts) for r in rows] == [("delivered", 2), ("delivered", 2)]
    pushed = [e for e in await upstream.audits() if e.action == "desk.contact.push"]
    assert [(e.resource_id, e.patient_id, e.actor) for e in pushed] == [
        (ids[0], patient, "desk-outbox")
    ]

    # An unchanged contact is not pushed again; a changed one is, as its next version.
    unchanged = await upstream.sync([contact("u1", patientId=patient), contact("u2", title="Dr")])
    assert [r["status"] for r in unchanged["results"]] == ["unchanged", "updated"]
    assert await sync_status(upstream, ids[1], "synced") == "synced"
    assert len(fake_desk.requests) == 3
    last = fake_desk.requests[-1][1]["contacts"]
    assert [(c["externalId"], c["version"], c["title"]) for c in last] == [("u2", 2, "Dr")]


async def test_a_refused_push_is_failed_at_once(upstream: Desk, fake_desk: FakeDesk) -> None:
    fake_desk.script = [400]
    answer = await upstream.sync([contact("r1")])
    contact_id = answer["results"][0]["contactId"]
    assert await sync_status(upstream, contact_id, "failed") == "failed"
    assert [(r.status, r.attempts, r.last_error) for r in await outbox(upstream)] == [
        ("dead", 1, "HTTP 400")
    ]
    assert len(fake_desk.requests) == 1


async def test_the_api_key_is_never_returned(upstream: Desk, fake_desk: FakeDesk) -> None:
    got = await upstream.gw.client.get("/admin/tenants/clinic", headers=upstream.gw.admin())
    section = got.json()["settings"]["desk"]
    assert section == {"baseUrl": fake_desk.url, "secretsSet": ["apiKey"]}
    assert API_KEY not in got.text
    listed = await upstream.gw.client.get("/admin/tenants/", headers=upstream.gw.admin())
    assert API_KEY not in listed.text
    contacts = await upstream.gw.client.get("/med/desk/contacts", headers=upstream.auth(READ))
    assert contacts.is_success and API_KEY not in contacts.text
