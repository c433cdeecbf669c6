from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from database.core import Base, IdMixin, TimestampMixin


class TestCase(IdMixin, TimestampMixin, Base):
    """A test: one input (or chat) with what is expected of the answer."""

    __tablename__ = "tests"
    __table_args__ = (
        # What TestCaseFields validates: an input, a non-empty chat or a conversation, whether
        # an absent one is a JSON null or SQL's NULL (which alone would let a check pass).
        CheckConstraint(
            "input IS NOT NULL"
            " OR coalesce(jsonb_typeof(messages) = 'array' AND messages <> '[]'::jsonb, false)"
            " OR coalesce(jsonb_typeof(conversation) = 'object', false)",
            name="has_input",
        ),
        Index("ix_tests_tags", "tags", postgresql_using="gin"),
        Index("ix_tests_project_id_created_at", "project_id", "created_at"),
    )
    __test__ = False  # not a pytest class

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    input: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    expected_output: Mapped[str | None] = mapped_column(Text)
    context: Mapped[list[str]] = mapped_column(JSONB, default=list)
    behavior: Mapped[str | None] = mapped_column(String(200), index=True)
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    topic: Mapped[str | None] = mapped_column(String(200), index=True)
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    variables: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    # Agents and conversations (see TestCaseFields); null when the test is a single answer.
    expected_tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    tool_responses: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    conversation: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class TestSetMember(Base):
    """A test's place in a set; positions order the set (gaps are allowed).

    Declared with the tests, so that listing tests can filter and sort by set without the
    tests knowing test sets; the set's membership queries are test_sets' (test sets are built
    on tests, never the other way round)."""

    __tablename__ = "test_set_members"
    __test__ = False

    test_set_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("test_sets.id", ondelete="CASCADE"), primary_key=True
    )
    test_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tests.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
