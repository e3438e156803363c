"""An ORC with several OBRs: one order, one worklist item per requested procedure."""

from __future__ import annotations

from sqlalchemy import func, select

from novaza_gateway.clinical import repository
from novaza_gateway.clinical.models import Order, WorklistItem
from tests.conftest import Gateway
from tests.hl7.test_http_intake import hl7_tenant, post

HEAD = (
    "MSH|^~\\&|EPIC|STMARYS|NOVAZA|RADIOLOGY|20260301094500||ORM^O01^ORM_O01|{cid}|P|2.5.1\r"
    "PID|1||100234^^^STMARYS^MR||O'Brien^Margaret^Ann||19580412|F\r"
)
ORC = "ORC|{control}|ORD9001^EPIC|ORD9001F^RIS||{status}||^^^20260301110000||20260301094500\r"
OBR = (
    "OBR|{n}|ORD9001^EPIC|ORD9001F^RIS|{code}^{text}^LOCAL"
    + "|" * 14
    + "{accession}"
    + "|" * 6
    + "{mod}\r"
)
CHEST = {"code": "CT-CHEST", "text": "CT chest", "mod": "CT"}
ABDOMEN = {"code": "US-ABD", "text": "US abdomen", "mod": "US"}


def message(cid: str, control: str, *obrs: dict[str, str], status: str = "") -> bytes:
    text = HEAD.format(cid=cid) + ORC.format(control=control, status=status)
    for n, obr in enumerate(obrs, start=1):
        text += OBR.format(n=n, **{"accession": "", **obr})
    return text.encode()


async def items(gw: Gateway) -> dict[str, tuple[str, str, str]]:
    tenant_id = gw.tenants["stmarys"]["id"]
    async with gw.app.state.db.sessionmaker() as session:
        order = await repository.order(session, tenant_id, "ORD9001")
        assert order is not None
        found = await repository.worklist_items_of_order(session, tenant_id, order.id)
        return {
            i.accession_number: (i.requested_procedure_code, i.modality, i.status) for i in found
        }


async def count(gw: Gateway, model: type[Order] | type[WorklistItem]) -> int:
    async with gw.app.state.db.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_each_obr_is_its_own_worklist_item(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    nw = message("M1", "NW", {**CHEST, "accession": "ACC-A"}, {**ABDOMEN, "accession": "ACC-B"})
    assert (await post(gateway, "orm", auth, nw)).status_code == 200
    assert await items(gateway) == {
        "ACC-A": ("CT-CHEST", "CT", "scheduled"),
        "ACC-B": ("US-ABD", "US", "scheduled"),
    }
    # the same order again (another control id): nothing new
    again = nw.replace(b"|M1|", b"|M2|")
    assert (await post(gateway, "orm", auth, again)).status_code == 200
    assert (await count(gateway, Order), await count(gateway, WorklistItem)) == (1, 2)
    # a status change naming one procedure moves that one
    sc = message("M3", "SC", {**ABDOMEN, "accession": "ACC-B"}, status="IP")
    assert (await post(gateway, "orm", auth, sc)).status_code == 200
    assert (await items(gateway))["ACC-B"][2] == "in_progress"
    assert (await items(gateway))["ACC-A"][2] == "scheduled"
    # a change must name its procedure when the order has several
    xo = message("M4", "XO", {"code": "CT-HEAD", "text": "CT head", "mod": "CT"})
    response = await post(gateway, "orm", auth, xo)
    assert response.status_code == 422 and "204^" in response.json()["details"]["ack"]
    # a cancel of the order (no procedure named) cancels every procedure
    ca = message("M5", "CA", status="CA")
    assert (await post(gateway, "orm", auth, ca)).status_code == 200
    assert {v[2] for v in (await items(gateway)).values()} == {"canceled"}


async def test_procedures_without_accession_numbers_get_one_each(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    nw = message("M1", "NW", CHEST, ABDOMEN, {"code": "XR-HAND", "text": "XR hand", "mod": "DX"})
    assert (await post(gateway, "orm", auth, nw)).status_code == 200
    assert sorted(await items(gateway)) == ["ORD9001F", "ORD9001F-2", "ORD9001F-3"]
    # discontinuing the second by position in a message with all three moves that one
    dc = message("M2", "DC", CHEST, ABDOMEN, {"code": "XR-HAND", "mod": "DX", "text": "x"})
    assert (await post(gateway, "orm", auth, dc)).status_code == 200
    assert {v[2] for v in (await items(gateway)).values()} == {"discontinued"}


async def test_a_failing_procedure_undoes_the_whole_message(gateway: Gateway) -> None:
    auth = await hl7_tenant(gateway)
    other = message("M0", "NW", {**CHEST, "accession": "TAKEN"}).replace(b"ORD9001", b"ORD8000")
    assert (await post(gateway, "orm", auth, other)).status_code == 200
    nw = message("M1", "NW", {**CHEST, "accession": "FREE"}, {**ABDOMEN, "accession": "TAKEN"})
    response = await post(gateway, "orm", auth, nw)
    assert response.status_code == 422
    assert (await count(gateway, Order), await count(gateway, WorklistItem)) == (1, 1)
