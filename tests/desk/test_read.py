"""GET /med/desk/contacts/{contactID} and the list: tenant isolation, scopes, pagination."""

from __future__ import annotations

from tests.desk.conftest import READ, WRITE, Desk, contact


async def test_get_by_id_and_by_external_id(desk: Desk) -> None:
    answer = await desk.sync([contact("crm-42", organization="Acme")])
    contact_id = answer["results"][0]["contactId"]
    by_id = await desk.get(contact_id)
    assert by_id.status_code == 200
    body = by_id.json()
    assert body["id"] == contact_id and body["externalId"] == "crm-42"
    assert body["organization"] == "Acme" and body["version"] == 1
    assert body["syncStatus"] is None  # embedded mode: nothing to push
    assert body["createdAt"].endswith("Z") or body["createdAt"].endswith("+00:00")
    by_external = await desk.get("ext:crm-42")
    assert by_external.status_code == 200 and by_external.json()["id"] == contact_id
    slashed = (await desk.sync([contact("crm/7")]))["results"][0]["contactId"]
    filtered = await desk.gw.client.get(
        "/med/desk/contacts", params={"externalId": "crm/7"}, headers=desk.auth(READ)
    )
    assert [c["id"] for c in filtered.json()["data"]] == [slashed]
    missing = await desk.get("ext:crm-43")
    assert missing.status_code == 404 and missing.json()["code"] == "CONTACT_NOT_FOUND"


async def test_another_tenants_contact_is_not_found(desk: Desk) -> None:
    mine = (await desk.sync([contact("shared-ext")]))["results"][0]["contactId"]
    for path in (mine, "ext:shared-ext"):
        response = await desk.get(path, tenant="other")
        assert response.status_code == 404
        assert response.json()["code"] == "CONTACT_NOT_FOUND"
    # The other tenant may use the same externalId: its own contact, not ours.
    theirs = await desk.sync([contact("shared-ext")], tenant="other")
    assert theirs["created"] == 1 and theirs["results"][0]["contactId"] != mine
    listed = await desk.gw.client.get("/med/desk/contacts", headers=desk.auth(READ, "other"))
    assert [c["id"] for c in listed.json()["data"]] == [theirs["results"][0]["contactId"]]


async def test_scopes_and_authentication(desk_lite: Desk) -> None:
    desk = desk_lite
    client = desk.gw.client
    body = {"contacts": [contact("s1")]}
    read_only = await client.post("/med/desk/contacts/sync", json=body, headers=desk.auth(READ))
    assert read_only.status_code == 403 and read_only.json()["code"] == "FORBIDDEN"
    anonymous = await client.post("/med/desk/contacts/sync", json=body)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "UNAUTHENTICATED"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    created = await client.post("/med/desk/contacts/sync", json=body, headers=desk.auth(WRITE))
    assert created.status_code == 200
    contact_id = created.json()["results"][0]["contactId"]
    write_only = await client.get(f"/med/desk/contacts/{contact_id}", headers=desk.auth(WRITE))
    assert write_only.status_code == 403
    assert (await client.get(f"/med/desk/contacts/{contact_id}")).status_code == 401
    no_tenant = desk.gw.auth(None, READ)
    refused = await client.get(f"/med/desk/contacts/{contact_id}", headers=no_tenant)
    assert refused.status_code == 403


async def test_list_pages_with_a_cursor_and_filters_by_update_time(desk: Desk) -> None:
    await desk.sync([contact(f"p{n}") for n in range(5)])
    headers = desk.auth(READ)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await desk.gw.client.get("/med/desk/contacts", params=params, headers=headers)
        assert page.status_code == 200, page.text
        seen += [c["externalId"] for c in page.json()["data"]]
        cursor = page.json()["nextCursor"]
        pages += 1
        if cursor is None:
            break
    assert sorted(seen) == [f"p{n}" for n in range(5)] and pages == 3

    first = await desk.get("ext:p0")
    since = first.json()["updatedAt"]
    await desk.sync([contact("p1", title="Dr"), {"externalId": "p2", "deleted": True}])
    changed = await desk.gw.client.get(
        "/med/desk/contacts", params={"updatedSince": since}, headers=headers
    )
    later = [c["externalId"] for c in changed.json()["data"] if c["updatedAt"] > since]
    assert later == ["p1"]  # the deleted one is left out unless asked for
    with_deleted = await desk.gw.client.get(
        "/med/desk/contacts",
        params={"updatedSince": since, "includeDeleted": "true"},
        headers=headers,
    )
    tail = [(c["externalId"], c["deleted"]) for c in with_deleted.json()["data"]][-2:]
    assert sorted(tail) == [("p1", False), ("p2", True)]
    bad = await desk.gw.client.get(
        "/med/desk/contacts", params={"cursor": "nonsense"}, headers=headers
    )
    assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION_FAILED"
