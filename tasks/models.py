from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from database.core import Base, IdMixin, TimestampMixin

JOB_STATUSES = ("queued", "running", "done", "dead")


class Job(IdMixin, TimestampMixin, Base):
    """A unit of background work. Payloads carry ids, never data."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'dead')", name="status"),
        Index("ix_jobs_claimable", "run_after", postgresql_where="status = 'queued'"),
        Index("ix_jobs_leases", "locked_until", postgresql_where="status = 'running'"),
        # Retention finds finished and dead jobs by age.
        Index(
            "ix_jobs_finished",
            "status",
            "finished_at",
            postgresql_where="status IN ('done', 'dead')",
        ),
        # The claim finds each organization's last claim.
        Index("ix_jobs_organization_claimed", "organization_id", "claimed_at"),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    # Taken over from a process that died holding it (its lease ran out): not an attempt.
    takeovers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_takeovers: Mapped[int] = mapped_column(Integer, default=20, server_default="20")
    # Whether its last claim was a takeover: what a release of it gives back.
    taken_over: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a worker last claimed it: equal turns go to the organization claimed longest ago.
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
