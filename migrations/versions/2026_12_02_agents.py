"""agents: model configurations carry tools (and, for HTTP targets, where their calls are in
the answer, and where each piece of a streamed answer is); a test may expect tool calls, mock
the tools' responses, bound the agent's steps and hold a conversation; a run may bound the
steps; a result keeps the trajectory, and a cached answer its tool calls.

Revision ID: 0010_agents
Revises: 0009_invitations
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010_agents"
down_revision: str | None = "0009_invitations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_configs", sa.Column("tools", JSONB, nullable=False, server_default="[]"))
    op.add_column("model_configs", sa.Column("tool_calls_path", sa.Text))
    op.add_column("model_configs", sa.Column("stream_path", sa.Text))
    op.add_column("tests", sa.Column("expected_tool_calls", JSONB))
    op.add_column("tests", sa.Column("tool_responses", JSONB))
    op.add_column("tests", sa.Column("max_steps", sa.Integer))
    op.add_column("tests", sa.Column("conversation", JSONB))
    op.add_column("runs", sa.Column("max_steps", sa.Integer))
    op.add_column(
        "runs",
        sa.Column(
            "simulator_model_id",
            sa.Uuid(),
            sa.ForeignKey("model_configs.id", ondelete="SET NULL"),
        ),
    )
    op.add_column("results", sa.Column("trajectory", JSONB))
    op.add_column("response_cache", sa.Column("tool_calls", JSONB))


def downgrade() -> None:
    op.drop_column("response_cache", "tool_calls")
    op.drop_column("results", "trajectory")
    op.drop_column("runs", "simulator_model_id")
    op.drop_column("runs", "max_steps")
    for column in ("conversation", "max_steps", "tool_responses", "expected_tool_calls"):
        op.drop_column("tests", column)
    op.drop_column("model_configs", "stream_path")
    op.drop_column("model_configs", "tool_calls_path")
    op.drop_column("model_configs", "tools")
