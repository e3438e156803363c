"""Rooms fixtures: a gateway with two tenants and their encounters, and a real Personeo peer.

The peer is a small Starlette app served by uvicorn on a free port: it records every request
and answers as the test scripts it (ok, 500, or too slow for the gateway's timeout), for
every request or for its DELETEs only. ``commit_fails`` makes the store refuse a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from novaza_gateway.clinical.models import Encounter, Patient
from novaza_gateway.core.audit import AuditEvent
from novaza_gateway.core.db import utcnow
from novaza_gateway.rooms.models import Room
from tests.conftest import Gateway, free_port, gateway_settings, start_gateway

ROOMS = "rooms:write"
WRITES_ROOM = re.compile(r"\s*(INSERT INTO|UPDATE) rooms\b", re.IGNORECASE)
UPSTREAM_TIMEOUT = 0.5


@dataclass
class RoomsGateway:
    gw: Gateway
    tenant_id: str
    other_id: str
    slug: str = "clinic"
    other: str = "other"

    def auth(
        self, scopes: str = ROOMS, tenant: str | None = None, sub: str = "dr-who"
    ) -> dict[str, str]:
        token = self.gw.token(tenant or self.slug, scopes, sub=sub)
        return {"Authorization": f"Bearer {token}"}

    async def encounter(
        self, visit_number: str, status: str = "admitted", tenant_id: str | None = None
    ) -> str:
        """A patient with one encounter, written as the clinical area would; its patient id."""
        now = utcnow()
        tenant = tenant_id or self.tenant_id
        patient_id = uuid.uuid4().hex
        async with self.gw.app.state.db.session_scope() as session:
            session.add(
                Patient(
                    id=patient_id,
                    tenant_id=tenant,
                    family_name="Doe",
                    created_at=now,
                    updated_at=now,
                )
            )
            await session.flush()
            session.add(
                Encounter(
                    id=uuid.uuid4().hex,
                    tenant_id=tenant,
                    patient_id=patient_id,
                    visit_number=visit_number,
                    status=status,
                    created_at=now,
                    updated_at=now,
                )
            )
        return patient_id

    async def rooms(self, tenant_id: str | None = None) -> list[Room]:
        async with self.gw.app.state.db.sessionmaker() as session:
            query = select(Room).where(Room.tenant_id == (tenant_id or self.tenant_id))
            return list((await session.execute(query)).scalars())

    async def audits(self, action: str | None = None) -> list[AuditEvent]:
        async with self.gw.app.state.db.sessionmaker() as session:
            query = select(AuditEvent).where(AuditEvent.resource_type == "personeo_room")
            if action is not None:
                query = query.where(AuditEvent.action == action)
            return list((await session.execute(query.order_by(AuditEvent.at))).scalars())


async def with_tenants(gw: Gateway, settings: dict[str, Any] | None = None) -> RoomsGateway:
    clinic = await gw.create_tenant("clinic", **({"settings": settings} if settings else {}))
    other = await gw.create_tenant("other")
    return RoomsGateway(gw, clinic["id"], other["id"])


@pytest.fixture
async def rooms(gateway: Gateway) -> AsyncIterator[RoomsGateway]:
    """On SQLite and PostgreSQL, embedded mode."""
    yield await with_tenants(gateway)


# ----------------------------------------------------------------------------- Personeo peer


@dataclass
class Personeo:
    """A real HTTP peer. ``mode``: "ok", "fail" (500) or "slow" (past the gateway timeout);
    ``delete_mode``, when set, for DELETEs instead. ``before_create`` runs (in the test's
    loop) before a create is answered."""

    port: int
    mode: str = "ok"
    delete_mode: str | None = None
    before_create: Callable[[], Awaitable[Any]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0  # requests received (a room's id is the count before its create)

    def deletes(self) -> list[str]:
        """The paths of the DELETEs it received, in order."""
        return [r["path"] for r in self.requests if r["method"] == "DELETE"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def app(self) -> Starlette:
        async def create(request: Request) -> Response:
            remote_id = f"prs-{self.calls}"
            self.calls += 1
            if self.before_create is not None:
                await self.before_create()
            return await self._answer(request, {"id": remote_id})

        async def archive(request: Request) -> Response:
            self.calls += 1
            return await self._answer(request, None)

        return Starlette(
            routes=[
                Route("/api/rooms", create, methods=["POST"]),
                Route("/api/rooms/{room}", archive, methods=["DELETE"]),
            ]
        )

    async def _answer(self, request: Request, body: dict[str, Any] | None) -> Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
                "json": await request.json() if request.method == "POST" else None,
                "id": body["id"] if body else None,
            }
        )
        mode = self.delete_mode if request.method == "DELETE" and self.delete_mode else self.mode
        if mode == "fail":
            return JSONResponse({"error": "boom"}, status_code=500)
        if mode == "slow":
            await asyncio.sleep(UPSTREAM_TIMEOUT * 4)
        if body is None:
            return Response(status_code=204)
        return JSONResponse(body, status_code=201)


@pytest.fixture
async def personeo() -> AsyncIterator[Personeo]:
    peer = Personeo(free_port())
    config = uvicorn.Config(
        peer.app(), host="127.0.0.1", port=peer.port, log_level="error", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield peer
    server.should_exit = True
    await task


@pytest.fixture
async def upstream(
    tmp_path: Path, db_url: str, personeo: Personeo
) -> AsyncIterator[tuple[RoomsGateway, Personeo]]:
    """Tenant 'clinic' in upstream mode against the peer, on SQLite and PostgreSQL."""
    settings = gateway_settings(
        tmp_path / "data", db_url, rooms_upstream_timeout_seconds=UPSTREAM_TIMEOUT
    )
    section = {"baseUrl": personeo.url, "apiKey": "prs-s3cret-key"}
    async for gw in start_gateway(settings):
        yield await with_tenants(gw, {"rooms": section}), personeo


# ----------------------------------------------------------------------------- the store


@contextlib.contextmanager
def commit_fails(rooms: RoomsGateway, room_status: str) -> Iterator[list[str]]:
    """The store refuses to COMMIT a transaction that wrote a room in this status, as a lost
    database would (OperationalError); the list collects one entry per refusal."""
    engine = rooms.gw.app.state.db.engine.sync_engine
    refused: list[str] = []
    mark = "test.writes_room"

    def before_execute(conn: Any, _: Any, statement: str, params: Any, *__: Any) -> None:
        values = params.values() if isinstance(params, dict) else params
        if WRITES_ROOM.match(statement) and room_status in tuple(values or ()):
            conn.info[mark] = True

    def commit(conn: Any) -> None:
        if conn.info.pop(mark, False):
            refused.append("commit")
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    def rollback(conn: Any) -> None:
        conn.info.pop(mark, None)

    hooks = [("before_cursor_execute", before_execute), ("commit", commit), ("rollback", rollback)]
    for name, hook in hooks:
        event.listen(engine, name, hook)
    try:
        yield refused
    finally:
        for name, hook in hooks:
            event.remove(engine, name, hook)
