"""``/ai/agents``: the built-in and tenant agents, messages, persisted conversations, audit."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from novaza_gateway.ai.models import AiMessage
from novaza_gateway.core.audit import AuditEvent
from tests.ai.conftest import MODEL, AiGateway, metered

SUMMARIZER = "clinical-note-summarizer"
NOTE = "Pt 64M, chest pain 2h, ECG normal, troponin pending. Plan: observe, repeat troponin."


async def message(ai: AiGateway, agent: str, body: dict[str, Any], token: str | None = None) -> Any:
    return await ai.gw.client.post(
        f"/ai/agents/{agent}/message",
        json=body,
        headers={"Authorization": f"Bearer {token or ai.token()}"},
    )


async def stored(ai: AiGateway, conversation_id: str) -> list[AiMessage]:
    async with ai.gw.app.state.db.sessionmaker() as session:
        rows = await session.execute(
            select(AiMessage)
            .where(
                AiMessage.tenant_id == ai.tenant_id, AiMessage.conversation_id == conversation_id
            )
            .order_by(AiMessage.seq)
        )
        return list(rows.scalars())


async def test_builtin_agents_are_listed_as_drafts_for_review(ai_lite: AiGateway) -> None:
    response = await ai_lite.gw.client.get("/ai/agents", headers=ai_lite.auth())
    assert response.status_code == 200
    body = response.json()
    assert body["nextCursor"] is None
    ids = [a["id"] for a in body["data"]]
    assert {SUMMARIZER, "patient-message-drafter", "radiology-report-simplifier"} <= set(ids)
    for agent in body["data"]:
        assert set(agent) == {"id", "name", "description", "model", "maxTokens", "builtin"}
        assert agent["model"] == MODEL and agent["builtin"] is True
        assert "review" in agent["description"]  # every output is a draft for a clinician


async def test_conversation_continues_and_is_stored(ai: AiGateway) -> None:
    first = await message(ai, SUMMARIZER, {"message": NOTE, "maxTokens": 8})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"conversationId", "agentId", "model", "reply", "finishReason", "usage"}
    assert body["agentId"] == SUMMARIZER and body["model"] == MODEL
    assert body["reply"]
    usage = body["usage"]
    assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
    conversation = body["conversationId"]
    assert first.headers["x-ratelimit-remaining-tokens"]

    follow = await message(
        ai, SUMMARIZER, {"message": "Shorter.", "conversationId": conversation, "maxTokens": 8}
    )
    assert follow.status_code == 200, follow.text
    assert follow.json()["conversationId"] == conversation
    # the follow-up's prompt carries the first exchange
    assert follow.json()["usage"]["promptTokens"] > usage["promptTokens"]

    rows = await stored(ai, conversation)
    assert [(r.seq, r.role) for r in rows] == [
        (1, "user"),
        (2, "assistant"),
        (3, "user"),
        (4, "assistant"),
    ]
    assert rows[0].content == NOTE and rows[1].content == body["reply"]
    assert rows[3].completion_tokens == follow.json()["usage"]["completionTokens"]

    async with ai.gw.app.state.db.sessionmaker() as session:
        events = (
            await session.execute(
                select(AuditEvent).where(
                    AuditEvent.tenant_id == ai.tenant_id, AuditEvent.action == "ai.agent.message"
                )
            )
        ).scalars()
        events = sorted(events, key=lambda e: e.after["turn"] if e.after else 0)
    assert [e.resource_id for e in events] == [conversation, conversation]
    assert events[0].actor == "user-1" and events[0].outcome == "success"
    recorded = str([e.after for e in events])
    assert "chest pain" not in recorded and body["reply"] not in recorded  # no content
    assert events[1].after is not None and events[1].after["turn"] == 2

    rows_billed = await metered(ai.gw, ai.tenant_id)
    assert sum(r.quantity for r in rows_billed) == (
        usage["totalTokens"] + follow.json()["usage"]["totalTokens"]
    )


async def test_conversations_are_tenant_scoped(ai: AiGateway) -> None:
    other = await ai.gw.create_tenant("elsewhere", plan="starter")
    first = await message(ai, SUMMARIZER, {"message": NOTE, "maxTokens": 8})
    conversation = first.json()["conversationId"]
    foreign = await message(
        ai,
        SUMMARIZER,
        {"message": "Continue.", "conversationId": conversation},
        token=ai.token(tenant="elsewhere"),
    )
    assert foreign.status_code == 404
    assert foreign.json()["code"] == "CONVERSATION_NOT_FOUND"
    # another agent of the same tenant cannot continue it either
    wrong_agent = await message(
        ai, "patient-message-drafter", {"message": "Hi", "conversationId": conversation}
    )
    assert wrong_agent.json()["code"] == "CONVERSATION_NOT_FOUND"
    unknown = await message(ai, SUMMARIZER, {"message": "Hi", "conversationId": "0" * 32})
    assert unknown.status_code == 404
    assert len(await stored(ai, conversation)) == 2
    assert await metered(ai.gw, other["id"]) == []


async def test_unknown_agent_and_invalid_bodies(ai_lite: AiGateway) -> None:
    missing = await message(ai_lite, "no-such-agent", {"message": "Hi"})
    assert (missing.status_code, missing.json()["code"]) == (404, "AGENT_NOT_FOUND")
    bad_id = await message(ai_lite, "Not_An_Id", {"message": "Hi"})
    assert bad_id.status_code == 422
    for body in ({}, {"message": ""}, {"message": "Hi", "conversationId": "x"}, {"msg": "Hi"}):
        response = await message(ai_lite, SUMMARIZER, body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "VALIDATION_FAILED"
    scope = await message(ai_lite, SUMMARIZER, {"message": "Hi"}, token=ai_lite.token("hl7:write"))
    assert scope.status_code == 403


async def test_tenant_defined_agents(ai_lite: AiGateway) -> None:
    gw = ai_lite.gw
    agents = [
        {
            "id": "triage-helper",
            "name": "Triage helper",
            "description": "Drafts a triage note for nurse review.",
            "systemPrompt": "You draft triage notes. Reply in one sentence.",
            "maxTokens": 4,
        },
        {
            "id": SUMMARIZER,  # replaces the built-in for this tenant
            "name": "House summarizer",
            "systemPrompt": "Summarize in three words.",
        },
    ]
    response = await gw.client.put(
        "/admin/tenants/clinic", json={"settings": {"ai": {"agents": agents}}}, headers=gw.admin()
    )
    assert response.status_code == 200, response.text
    listed = (await gw.client.get("/ai/agents", headers=ai_lite.auth())).json()["data"]
    by_id = {a["id"]: a for a in listed}
    assert by_id["triage-helper"]["builtin"] is False
    assert by_id["triage-helper"]["maxTokens"] == 4
    assert by_id[SUMMARIZER]["name"] == "House summarizer"
    reply = await message(
        ai_lite, "triage-helper", {"message": "Fever 39C since yesterday.", "maxTokens": 50}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completionTokens"] <= 4

    invalid = await gw.client.put(
        "/admin/tenants/clinic",
        json={"settings": {"ai": {"agents": [{"id": "x y", "name": "n"}]}}},
        headers=gw.admin(),
    )
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "VALIDATION_FAILED"


async def test_concurrent_messages_to_one_conversation(ai: AiGateway) -> None:
    """Both read the same history; the reply finished second was written for a history that
    moved on: 409 CONVERSATION_BUSY, nothing stored for it (its tokens are billed)."""
    first = await message(ai, SUMMARIZER, {"message": NOTE, "maxTokens": 8})
    conversation = first.json()["conversationId"]
    both = await asyncio.gather(
        *(
            message(
                ai, SUMMARIZER, {"message": text, "conversationId": conversation, "maxTokens": 8}
            )
            for text in ("Shorter.", "Longer.")
        )
    )
    assert sorted(r.status_code for r in both) == [200, 409]
    busy = next(r for r in both if r.status_code == 409)
    assert busy.json()["code"] == "CONVERSATION_BUSY"
    assert [r.seq for r in await stored(ai, conversation)] == [1, 2, 3, 4]
