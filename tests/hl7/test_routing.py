"""The MLLP routing table: an expired table answers at once while one task reloads it."""

from __future__ import annotations

import asyncio
from typing import Any

from novaza_gateway.hl7.routing import TenantHl7Settings


class Source:
    def __init__(self) -> None:
        self.loads = 0
        self.facility = "OLD"
        self.gate = asyncio.Event()
        self.gate.set()

    async def section(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        return None

    async def sections(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        self.loads += 1
        await self.gate.wait()
        return [("t1", {"mllpRoutes": [{"receivingFacility": self.facility}]})]


async def test_stale_routes_answer_while_one_reload_runs() -> None:
    source = Source()
    settings = TenantHl7Settings(source, ttl_seconds=0.05)
    first = await settings.route("APP", "OLD", "")
    assert first is not None and first.tenant_id == "t1" and source.loads == 1
    await asyncio.sleep(0.06)  # expired
    source.facility, source.gate = "NEW", asyncio.Event()
    answers = await asyncio.gather(*(settings.route("APP", "OLD", "") for _ in range(5)))
    assert all(a is not None and a.tenant_id == "t1" for a in answers)  # the stale table
    assert source.loads == 2  # one reload for the five callers
    source.gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await settings.route("APP", "OLD", "") is None
    assert await settings.route("APP", "NEW", "") is not None
    assert source.loads == 2
