"""One tenant can never hurt another (issue 11), on SQLite and PostgreSQL.

For ``NOVAZA_TEST_HL7_ISOLATION_SECONDS`` (10) seconds, three senders of tenant A send
nothing but trouble: control characters (refused by the parser), values the store refuses
(a trigger: AE in the message's SAVEPOINT), message rows the store refuses (AR, each message
alone), the largest order messages allowed and ones past the cap. Meanwhile tenant B sends
valid ADT and ORM over HTTP and MLLP. Every one of B's messages is answered AA, stored once
and applied; A's get the answers the docs promise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from novaza_gateway.clinical.models import WorklistItem
from novaza_gateway.hl7.mllp import frame
from novaza_gateway.hl7.models import InboundMessage
from tests.conftest import Gateway
from tests.hl7.messages import a08, orm
from tests.hl7.test_mllp_listener import RawClient
from tests.hl7.test_poison import RIVERSIDE, await_gateway, msa, post

SECONDS = float(os.environ.get("NOVAZA_TEST_HL7_ISOLATION_SECONDS", "10"))
IDS = itertools.count(1)


@pytest.fixture
async def gw(tmp_path: Path, db_url: str) -> AsyncIterator[Gateway]:
    async for gateway in await_gateway(tmp_path, db_url):
        yield gateway


def poison(kind: str) -> tuple[bytes, str, str]:
    """One of tenant A's bad messages: (message, endpoint, the answer it must get)."""
    n = next(IDS)
    a = {"facility": "RIVERSIDE", "receiver": RIVERSIDE}
    if kind == "nul":
        return a08(f"A{n}", f"A{n}", "POISONNAME^O\x00NE", **a), "adt", "AR"
    if kind == "refused":
        return a08(f"A{n}", f"A{n}", "POISON", **a), "adt", "AE"
    if kind == "row":
        return a08(f"POISONROW{n}", f"A{n}", "ROW", **a), "adt", "AR"
    if kind == "big":
        return orm(f"A{n}", f"A{n}", f"AORD{n}", procedures=50, **a), "orm", "AA"
    return orm(f"A{n}", f"A{n}", f"AORD{n}", procedures=51, **a), "orm", "AR"  # over the cap


def valid() -> tuple[bytes, str]:
    n = next(IDS)
    if n % 2:
        return a08(f"B{n}", f"B{n}", "VALID"), "adt"
    return orm(f"B{n}", f"B{n}", f"BORD{n}"), "orm"


HTTP_CODE = {"AA": 200, "AE": 422, "AR": 400}


async def test_tenant_b_is_answered_aa_while_tenant_a_sends_poison(gw: Gateway) -> None:
    deadline = asyncio.get_running_loop().time() + SECONDS
    sent: list[str] = []  # B's control ids
    answers: Counter[str] = Counter()
    wrong: list[str] = []

    def running() -> bool:
        return asyncio.get_running_loop().time() < deadline

    async def a_over_http(kinds: list[str]) -> None:
        for kind in itertools.cycle(kinds):
            if not running():
                return
            message, path, expected = poison(kind)
            answer = await post(gw, "riverside", message, path)
            if answer.status_code != HTTP_CODE[expected]:
                wrong.append(f"A {kind}: {answer.status_code}")

    async def a_over_mllp() -> None:
        client = await RawClient.connect(gw)
        for kind in itertools.cycle(["big", "row", "over", "refused", "nul"]):
            if not running():
                break
            message, _, expected = poison(kind)
            await client.send(frame(message))
            if (got := msa(await client.ack())[0]) != expected:
                wrong.append(f"A mllp {kind}: {got}")
        await client.close()

    async def b_over_http() -> None:
        while running():
            message, path = valid()
            sent.append(message.split(b"|")[9].decode())
            answer = await post(gw, "stmarys", message, path)
            answers["AA" if answer.status_code == 200 else str(answer.status_code)] += 1

    async def b_over_mllp() -> None:
        client = await RawClient.connect(gw)
        while running():
            message, _ = valid()
            sent.append(message.split(b"|")[9].decode())
            await client.send(frame(message))
            answers[msa(await client.ack())[0]] += 1
        await client.close()

    await asyncio.gather(
        a_over_http(["nul", "refused"]),
        a_over_http(["refused", "row", "big"]),
        a_over_mllp(),
        b_over_http(),
        b_over_http(),
        b_over_mllp(),
        b_over_mllp(),
    )
    assert not wrong and sent
    assert answers == Counter({"AA": len(sent)}), answers  # 100 % AA
    async with gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(InboundMessage.control_id, InboundMessage.status).where(
                InboundMessage.control_id.in_(sent)
            )
        )
        stored = dict(rows.all())
        items = await session.execute(
            select(func.count()).where(WorklistItem.placer_order_number.like("BORD%"))
        )
        b_items = items.scalar_one()
    assert len(stored) == len(sent) and set(stored.values()) == {"processed"}  # nothing lost
    assert b_items == sum(1 for c in sent if int(c[1:]) % 2 == 0)
