"""Desk fixtures: a gateway with two tenants, sync and read helpers, patients, audit reads;
a fake upstream Desk (a real HTTP server over TCP) and a gateway pushing to it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from novaza_gateway.clinical import patients
from novaza_gateway.core.audit import Actor, AuditEvent
from novaza_gateway.desk.models import DeskOutboxEntry
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway

WRITE = "desk:write"
READ = "desk:read"
BOTH = "desk:read desk:write"
SYNC = "/med/desk/contacts/sync"


def contact(external_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalId": external_id,
        "name": {"given": "Ada", "family": f"Lovelace {external_id}"},
        "emails": [f"{external_id}@Example.ORG"],
        "phones": ["+44 (20) 7946-0000"],
        "tags": ["vip"],
    }
    body.update(fields)
    return body


@dataclass
class Desk:
    gw: Gateway
    tenant_id: str
    other_id: str
    slug: str = "clinic"

    def auth(self, scopes: str = BOTH, tenant: str | None = None) -> dict[str, str]:
        return self.gw.auth(tenant or self.slug, scopes)

    async def sync(
        self, contacts: list[dict[str, Any]], tenant: str | None = None, status: int = 200
    ) -> dict[str, Any]:
        response = await self.post({"contacts": contacts}, tenant)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    async def post(self, body: Any, tenant: str | None = None) -> httpx.Response:
        return await self.gw.client.post(SYNC, json=body, headers=self.auth(WRITE, tenant))

    async def get(self, contact_id: str, tenant: str | None = None) -> httpx.Response:
        return await self.gw.client.get(
            f"/med/desk/contacts/{contact_id}", headers=self.auth(READ, tenant)
        )

    async def patient(self, tenant_id: str, mrn: str) -> str:
        data = patients.PatientData([patients.Identifier(mrn, "MRN")])
        async with self.gw.app.state.db.session_scope() as session:
            patient, _ = await patients.register(session, Actor("test", tenant_id), tenant_id, data)
            return str(patient.id)

    async def audits(self, action_prefix: str = "desk.") -> list[AuditEvent]:
        async with self.gw.app.state.db.sessionmaker() as session:
            rows = await session.execute(
                select(AuditEvent)
                .where(AuditEvent.action.startswith(action_prefix))
                .order_by(AuditEvent.at)
            )
            return list(rows.scalars())


async def with_tenants(gw: Gateway, **settings: Any) -> Desk:
    limits = {"rateLimit": {"ratePerSecond": 1000, "burst": 1000}}
    clinic = await gw.create_tenant("clinic", **limits, **settings)
    other = await gw.create_tenant("other", **limits)
    return Desk(gw, clinic["id"], other["id"])


@pytest.fixture
async def desk(gateway: Gateway) -> AsyncIterator[Desk]:
    """On SQLite and PostgreSQL."""
    yield await with_tenants(gateway)


@pytest.fixture
async def desk_lite(gw: Gateway) -> AsyncIterator[Desk]:
    """On SQLite only: behaviour that does not depend on the store."""
    yield await with_tenants(gw)


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
