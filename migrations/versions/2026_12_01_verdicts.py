"""verdicts: a project's baseline run, a run's gate and its result, a budget (`max_cost`, the
`spent` so far and the `stopped` status of a run that reached it), outputs reused from another
run (rescore) or read from the cases (recorded)

Revision ID: 0007_verdicts
Revises: 0006_legacy_run_starts
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from migrations.rls import across_organizations

revision: str = "0007_verdicts"
down_revision: str | None = "0006_legacy_run_starts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = "'queued', 'running', 'completed', 'failed', 'cancelled'"


def upgrade() -> None:
    op.add_column("runs", sa.Column("gate", JSONB))
    op.add_column("runs", sa.Column("gate_result", JSONB))
    op.add_column("runs", sa.Column("max_cost", sa.Float))
    op.add_column("runs", sa.Column("spent", sa.Float, nullable=False, server_default="0"))
    op.add_column("runs", sa.Column("recorded_field", sa.String(200)))
    op.add_column(
        "runs",
        sa.Column(
            "outputs_from_run_id",
            UUID(as_uuid=True),
            sa.ForeignKey("runs.id", ondelete="SET NULL"),
        ),
    )
    op.drop_constraint(op.f("ck_runs_status"), "runs", type_="check")
    op.create_check_constraint(
        op.f("ck_runs_status"), "runs", f"status IN ({_STATUSES}, 'stopped')"
    )
    op.add_column(
        "projects",
        sa.Column(
            "baseline_run_id", UUID(as_uuid=True), sa.ForeignKey("runs.id", ondelete="SET NULL")
        ),
    )
    # Comparisons pair a run's results by test.
    op.create_index("ix_results_run_id_test_id", "results", ["run_id", "test_id"])


def downgrade() -> None:
    op.drop_index("ix_results_run_id_test_id", "results")
    op.drop_column("projects", "baseline_run_id")
    across_organizations(("runs",), "UPDATE runs SET status = 'cancelled' WHERE status = 'stopped'")
    op.drop_constraint(op.f("ck_runs_status"), "runs", type_="check")
    op.create_check_constraint(op.f("ck_runs_status"), "runs", f"status IN ({_STATUSES})")
    for column in ("outputs_from_run_id", "recorded_field", "spent", "max_cost"):
        op.drop_column("runs", column)
    op.drop_column("runs", "gate_result")
    op.drop_column("runs", "gate")
