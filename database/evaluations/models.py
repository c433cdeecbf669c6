from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from database.core import Base, IdMixin, TimestampMixin, reference_index, run_key


class Metric(IdMixin, TimestampMixin, Base):
    """A metric definition (evaluator): a check or a judge, with its pass threshold."""

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        CheckConstraint("operator IN ('>=', '>', '<=', '<', '==')", name="operator"),
        reference_index("metrics", "judge_model_id"),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    threshold: Mapped[float] = mapped_column(Float)
    operator: Mapped[str] = mapped_column(String(2), default=">=")
    negate: Mapped[bool] = mapped_column(Boolean, default=False)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    judge_model_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_configs.id", ondelete="SET NULL")
    )
    description: Mapped[str | None] = mapped_column(Text)


class TestSetMetric(Base):
    """A test set's default metrics, in order."""

    __tablename__ = "test_set_metrics"
    __test__ = False

    test_set_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("test_sets.id", ondelete="CASCADE"), primary_key=True
    )
    metric_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("metrics.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class Evaluation(IdMixin, Base):
    """One metric's verdict on one result (a judge's own tokens and cost included)."""

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("result_id", "metric_name"),
        # As results' (see migration 0017_tenant_run_indexes).
        Index("ix_evaluations_organization_id_run_id", "organization_id", "run_id"),
        run_key(),
    )

    organization_id: Mapped[uuid.UUID]
    result_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    run_id: Mapped[uuid.UUID]
    # Its result's case (position), written with it: a run's evaluations are read by case
    # without their results (migration 0026_evaluation_position).
    position: Mapped[int] = mapped_column(Integer)
    # The metric it was made with, by id alone (migration 0021_evaluation_metric_reference): it
    # may since have been deleted, and the run keeps its copy.
    metric_id: Mapped[uuid.UUID | None]
    metric_name: Mapped[str] = mapped_column(String(200))
    metric_type: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
