"""evaluation metric reference: an evaluation names the metric it was made with by id alone,
with no foreign key to metrics

The key's ON DELETE SET NULL had no index on evaluations.metric_id to serve it: deleting any
metric read every organization's evaluations (a key's action does not see the policy), 60 ms
with 800,000 rows here and linear beyond, and an index would have made each deletion rewrite
every evaluation the metric had made. The key's check also cost each evaluation written one
more lookup, and a row lock, of its metric. An evaluation is history: it keeps the metric's
name and type, its run keeps the metric's whole definition, and the id keeps naming the metric
after its deletion (no id is ever reused), as a run's own copy does.

Revision ID: 0021_evaluation_metric_reference
Revises: 0020_version_key_deferrable
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

from migrations.rls import across_organizations

revision: str = "0021_evaluation_metric_reference"
down_revision: str | None = "0020_version_key_deferrable"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "fk_evaluations_metric_id_metrics"

# As the key left them: no evaluation names a metric that is gone.
_FORGET_DELETED = """
UPDATE evaluations e SET metric_id = NULL
WHERE metric_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM metrics m WHERE m.id = e.metric_id)
"""


def upgrade() -> None:
    op.drop_constraint(KEY, "evaluations", type_="foreignkey")


def downgrade() -> None:
    # On metrics too: seeing no metric, the update would forget every id.
    across_organizations(("evaluations", "metrics"), _FORGET_DELETED)
    op.create_foreign_key(KEY, "evaluations", "metrics", ["metric_id"], ["id"], ondelete="SET NULL")
