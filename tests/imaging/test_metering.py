"""Imaging usage for billing: bytes served as sent, each stored instance once."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from novaza_gateway.billing.models import UsageRecord
from tests.conftest import Gateway
from tests.imaging.conftest import STOW, imaging_tenant
from tests.imaging.dicom import make_instance, multipart, uid

WADO = "/med/wado/studies"


async def usage(gw: Gateway, tenant_id: str, meter: str) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(UsageRecord.quantity), 0)).where(
                UsageRecord.tenant_id == tenant_id, UsageRecord.meter == meter
            )
        )
        return int(total or 0)


async def settled(gw: Gateway, tenant_id: str, meter: str, expected: int) -> int:
    """The flusher writes every second: wait for the expected total, then a little more."""
    for _ in range(60):
        if await usage(gw, tenant_id, meter) >= expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    return await usage(gw, tenant_id, meter)


async def test_bytes_served_and_instances_stored_are_metered(gateway: Gateway) -> None:
    auth = await imaging_tenant(gateway, "meter-img")
    other = await imaging_tenant(gateway, "meter-other")
    tenant_id = gateway.tenants["meter-img"]["id"]
    study = uid()
    files = [make_instance(study=study, instance_number=i) for i in (1, 2, 3)]
    body, ctype = multipart(files)
    for _ in range(2):  # a re-sent STOW stores the same SOP instances: billed once
        response = await gateway.client.post(
            STOW, content=body, headers={**auth, "Content-Type": ctype}
        )
        assert response.status_code == 200, response.text

    retrieved = await gateway.client.get(f"{WADO}/{study}", headers=auth)
    assert retrieved.status_code == 200
    metadata = await gateway.client.get(f"{WADO}/{study}/metadata", headers=auth)
    assert metadata.status_code == 200
    # an error answer is not billed as imaging bytes
    assert (await gateway.client.get(f"{WADO}/{study}", headers=other)).status_code == 404

    served = len(retrieved.content) + len(metadata.content)
    assert await settled(gateway, tenant_id, "imaging_bytes_served", served) == served
    assert await settled(gateway, tenant_id, "stored_instances", 3) == 3
    other_id = gateway.tenants["meter-other"]["id"]
    assert await usage(gateway, other_id, "stored_instances") == 0
    assert await usage(gateway, other_id, "imaging_bytes_served") == 0
