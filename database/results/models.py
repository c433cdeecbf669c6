from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from database.core import Base, IdMixin, TimestampMixin, reference_index, run_key

# `stopped`: ended early by its budget (`max_cost`), the reason in `error`.
TERMINAL = frozenset({"completed", "failed", "cancelled", "stopped"})
CHUNK_JOB = "run.chunk"  # a run is queued as chunks of its cases; the engine's handler runs them


class Run(IdMixin, TimestampMixin, Base):
    """A test set version run against a target, scored by metrics, `repetitions` times."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'stopped')",
            name="status",
        ),
        Index("ix_runs_project_id_created_at", "project_id", "created_at"),
        Index(
            "uq_runs_request_key",
            "organization_id",
            "request_key",
            unique=True,
            postgresql_where=text("request_key IS NOT NULL"),
        ),
        UniqueConstraint("id", "organization_id"),  # what its rows' run_key() references
        *(
            reference_index("runs", column)
            for column in (
                "target_model_id",
                "simulator_model_id",
                "prompt_version_id",
                "parent_run_id",
                "outputs_from_run_id",
            )
        ),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    test_set_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("test_sets.id", ondelete="SET NULL"), index=True
    )
    test_set_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("test_set_versions.id", ondelete="CASCADE"), index=True
    )
    target_model_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_configs.id", ondelete="SET NULL")
    )
    prompt_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("prompt_versions.id", ondelete="SET NULL")
    )
    # It renders its cases through a prompt version: kept when the version goes with its
    # prompt, so the run fails rather than go on without it.
    prompted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL")
    )
    name: Mapped[str | None] = mapped_column(String(200))
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    # Positions of the version's cases this run executes (None = all); a rerun lists some.
    case_positions: Mapped[list[int] | None] = mapped_column(JSONB)
    concurrency: Mapped[int] = mapped_column(Integer)
    repetitions: Mapped[int] = mapped_column(Integer, default=1)
    max_steps: Mapped[int | None] = mapped_column(Integer)  # an agent's model calls per case
    simulator_model_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_configs.id", ondelete="SET NULL")
    )
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    use_cache: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A rescore's outputs come from this run's results; a recorded run's from the cases.
    outputs_from_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL")
    )
    recorded_field: Mapped[str | None] = mapped_column(String(200))
    # What ends the run when it is over (see results/gates.py), and what it said.
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    gate_result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    max_cost: Mapped[float | None] = mapped_column(Float)
    spent: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # Each model's digest when the run was made (results/model_pins.py), by its id.
    model_digests: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # The Idempotency-Key it was asked with (unique in its organization), and a digest of
    # what was asked: the same key again gives this run; with another request, a refusal.
    request_key: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # The last run event's seq (see RunEvent below): committed with the event.
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Result(IdMixin, Base):
    """One execution of one case: unique per (run, case position, repetition)."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("run_id", "position", "repetition"),
        # Row-level security's index leads with the organization, then the run: a run's
        # rows are one range of it. A test's results are found directly when it is deleted
        # (migration 0017_tenant_run_indexes).
        Index("ix_results_organization_id_run_id", "organization_id", "run_id"),
        Index("ix_results_test_id", "test_id"),
        CheckConstraint("status IN ('passed', 'failed', 'errored')", name="status"),
        run_key(),
    )

    organization_id: Mapped[uuid.UUID]
    run_id: Mapped[uuid.UUID]
    position: Mapped[int] = mapped_column(Integer)
    repetition: Mapped[int] = mapped_column(Integer, default=0)
    test_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tests.id", ondelete="SET NULL"))
    input: Mapped[dict[str, Any]] = mapped_column(JSONB)
    output: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # An agent's steps ({"text", "tool_calls", "tool_results", ...}); null for one answer.
    trajectory: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # The bytes of its output, error, input and trajectory as text, written with the row: what
    # reading it costs, where the stored size of a compressed JSON value can be a hundredth of
    # it (pages of results end by it; null for rows written before migration 0025).
    text_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RunCounts(Base):
    """A run's results by status, kept by triggers on `results` (migration 0016_run_counts):
    never written from here. No row until the run's first result; the row goes with the run
    (a trigger on `runs`: no foreign key, so keeping it locks nothing but itself)."""

    __tablename__ = "run_counts"

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    done: Mapped[int] = mapped_column(BigInteger, server_default="0")
    passed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    failed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    errored: Mapped[int] = mapped_column(BigInteger, server_default="0")


class CachedResponse(Base):
    """The opt-in response cache, keyed by a hash of the rendered request."""

    __tablename__ = "response_cache"
    # Retention prunes by age (migration 0034_response_cache_retention).
    __table_args__ = (Index("ix_response_cache_created_at", "created_at"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    output: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RunEvent(Base):
    """One event of one run. `seq` counts from 1 per run with no gaps: it is allocated from
    `runs.event_seq` under the run's row lock, so events commit in `seq` order."""

    __tablename__ = "run_events"
    # As results' (see migration 0017_tenant_run_indexes).
    __table_args__ = (
        Index("ix_run_events_organization_id_run_id", "organization_id", "run_id"),
        run_key(),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organization_id: Mapped[uuid.UUID]
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
