"""metric judge index: a metric's judge model leads an index, so that deleting a model reads
only the metrics it judged

Deleting a model configuration nulls the judge of every metric naming it. Unindexed, that read
the whole metrics table, across every organization, once per deleted model: 26 ms of a 32 ms
`DELETE /models/{id}` with 200,000 metrics in the installation, and as much again for each of
an organization's models when the organization is deleted. As with the runs' and projects'
nullable references (0022_reference_indexes), only the metrics that name a judge are indexed.

Revision ID: 0023_metric_judge_index
Revises: 0022_reference_indexes
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_metric_judge_index"
down_revision: str | None = "0022_reference_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_metrics_judge_model_id"


def upgrade() -> None:
    op.create_index(
        INDEX,
        "metrics",
        ["judge_model_id"],
        postgresql_where=sa.text("judge_model_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="metrics")
