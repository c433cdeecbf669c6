"""live runs: run events (with a per-run sequence on runs), streamed model configurations

Revision ID: 0004_live_runs
Revises: 0003_runs
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.rls import enable_tenant_rls

revision: str = "0004_live_runs"
down_revision: str | None = "0003_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("event_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "model_configs", sa.Column("stream", sa.Boolean(), server_default="false", nullable=False)
    )
    op.create_table(
        "run_events",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_run_events_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_run_events")),
    )
    op.create_index(
        op.f("ix_run_events_organization_id"), "run_events", ["organization_id"], unique=False
    )
    enable_tenant_rls("run_events")


def downgrade() -> None:
    op.drop_index(op.f("ix_run_events_organization_id"), table_name="run_events")
    op.drop_table("run_events")
    op.drop_column("model_configs", "stream")
    op.drop_column("runs", "event_seq")
