"""Conversation storage. Every query names the tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from novaza_gateway.ai.models import AiConversation, AiMessage
from novaza_gateway.core.db import utcnow
from novaza_gateway.core.ids import new_id


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange to store: the caller's message and the agent's reply."""

    message: str
    reply: str
    model: str
    prompt_tokens: int
    completion_tokens: int


async def get_conversation(
    session: AsyncSession, tenant_id: str, conversation_id: str
) -> AiConversation | None:
    query = select(AiConversation).where(
        AiConversation.tenant_id == tenant_id, AiConversation.id == conversation_id
    )
    return (await session.execute(query)).scalar_one_or_none()


async def recent_messages(
    session: AsyncSession, tenant_id: str, conversation_id: str, limit: int
) -> Sequence[AiMessage]:
    """The conversation's last ``limit`` messages, oldest first."""
    if limit <= 0:
        return []
    query = (
        select(AiMessage)
        .where(AiMessage.tenant_id == tenant_id, AiMessage.conversation_id == conversation_id)
        .order_by(AiMessage.seq.desc())
        .limit(limit)
    )
    rows = (await session.execute(query)).scalars().all()
    return list(reversed(rows))


def new_conversation(session: AsyncSession, tenant_id: str, agent_id: str, subject: str) -> str:
    now = utcnow()
    conversation = AiConversation(
        id=new_id(),
        tenant_id=tenant_id,
        agent_id=agent_id,
        subject=subject[:255],
        turns=0,
        created_at=now,
        updated_at=now,
    )
    session.add(conversation)
    return conversation.id


async def append_turn(
    session: AsyncSession, tenant_id: str, conversation_id: str, expected_turns: int, turn: Turn
) -> bool:
    """Add the exchange as turn ``expected_turns + 1``; False when another request added a
    turn since the history was read (the reply was written for a history that moved on)."""
    await session.flush()  # a conversation created in this session exists before the update
    now = utcnow()
    bumped = await session.execute(
        update(AiConversation)
        .where(
            AiConversation.tenant_id == tenant_id,
            AiConversation.id == conversation_id,
            AiConversation.turns == expected_turns,
        )
        .values(turns=expected_turns + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if bumped.rowcount != 1:  # type: ignore[attr-defined]
        return False
    seq = 2 * expected_turns
    session.add_all(
        [
            AiMessage(
                id=new_id(),
                tenant_id=tenant_id,
                conversation_id=conversation_id,
                seq=seq + 1,
                role="user",
                content=turn.message,
                model=None,
                prompt_tokens=None,
                completion_tokens=None,
                created_at=now,
            ),
            AiMessage(
                id=new_id(),
                tenant_id=tenant_id,
                conversation_id=conversation_id,
                seq=seq + 2,
                role="assistant",
                content=turn.reply,
                model=turn.model,
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                created_at=now,
            ),
        ]
    )
    return True
