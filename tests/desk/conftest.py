"""Desk fixtures: a gateway with two tenants, sync and read helpers, patients, audit reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from novaza_gateway.clinical import patients
from novaza_gateway.core.audit import Actor, AuditEvent
from tests.conftest import Gateway

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
