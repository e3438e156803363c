"""Agent conversations: one row per conversation, one per message, both tenant-scoped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from novaza_gateway.core.db import Base, UtcDateTime


class AiConversation(Base):
    __tablename__ = "ai_conversations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "id", name="uq_ai_conversations_key"),
        Index("ix_ai_conversations_tenant_updated", "tenant_id", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    agent_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))  # who started it (token subject)
    turns: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AiMessage(Base):
    """A message of a conversation. The text is clinical content: stored, never logged."""

    __tablename__ = "ai_messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_ai_messages_seq"),
        Index("ix_ai_messages_tenant_conversation", "tenant_id", "conversation_id", "seq"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    conversation_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("ai_conversations.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
