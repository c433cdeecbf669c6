from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from database.core import Base, IdMixin, TimestampMixin


class TestSet(IdMixin, TimestampMixin, Base):
    __tablename__ = "test_sets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    __test__ = False

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    # Bumped by database triggers on any change to the set's members or their tests;
    # `published_revision` is the revision its latest version is known to hold.
    content_revision: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # How many tests it holds, kept by the same triggers (read by a query: the attribute of a
    # loaded set does not see a later change).
    member_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    published_revision: Mapped[int | None] = mapped_column(BigInteger)


class TestSetVersion(IdMixin, Base):
    """An immutable snapshot of a set's cases (the runtime role may not UPDATE it)."""

    __tablename__ = "test_set_versions"
    __table_args__ = (UniqueConstraint("test_set_id", "number"),)
    __test__ = False

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    test_set_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("test_sets.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    case_count: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Each case's behavior, category and topic, as codes (slice_index.SliceIndex): megabytes
    # for a large version, loaded only when asked for (a comparison selects them).
    slice_values: Mapped[dict[str, list[str | None]]] = mapped_column(JSONB, deferred=True)
    slice_codes: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012


class TestSetVersionCase(Base):
    __tablename__ = "test_set_version_cases"
    __test__ = False

    # Deferrable: a publish writes a version's cases before the version (migration
    # 0020_version_key_deferrable).
    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(
            "test_set_versions.id", ondelete="CASCADE", deferrable=True, initially="IMMEDIATE"
        ),
        primary_key=True,
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    test_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tests.id", ondelete="SET NULL"), index=True
    )
    case: Mapped[dict[str, Any]] = mapped_column(JSONB)
