"""Dependency aliases, declared once: ``SessionDep``, ``PrincipalDep``, ``TenantDep``.

The getters are ``async def`` although they do not await: FastAPI runs a plain ``def``
dependency in the thread pool, a thread hop per dependency per request on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.core.audit import Actor
from novaza_gateway.core.auth import Principal
from novaza_gateway.core.db import Database
from novaza_gateway.core.tenancy import TenantContext


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.db
    async with database.session_scope() as session:
        yield session


async def get_principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


async def get_tenant(request: Request) -> TenantContext:
    tenant: TenantContext = request.state.tenant
    return tenant


async def get_actor(request: Request) -> Actor:
    principal: Principal = request.state.principal
    tenant: TenantContext | None = getattr(request.state, "tenant", None)
    if getattr(request.state, "tenant_override", False):  # X-Tenant-ID: acting for another
        return Actor(principal.subject, tenant.id if tenant else None, principal.tenant, True)
    return Actor(principal.subject, tenant.id if tenant else None)


# scope="function": commit before the response leaves, so an answered write is durable.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
TenantDep = Annotated[TenantContext, Depends(get_tenant)]
ActorDep = Annotated[Actor, Depends(get_actor)]
