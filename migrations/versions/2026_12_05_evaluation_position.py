"""evaluation position: each evaluation carries its result's case (position)

A comparison reads both runs' evaluations per metric and case, and a summary of repetitions
its evaluations per case. Both joined every evaluation to its result only to find its case:
a quarter of the comparison's metrics read at 100,000 results (two metrics a result). The
position is now written with each evaluation, as its result's; a result's position never
changes once written.

Existing rows take their results' positions, then the column is made NOT NULL: one pass over
the evaluations, rewriting each row once, inside the migration's transaction, under the
exclusive lock the new column takes (evaluations are neither read nor written meanwhile). A
previous release's worker still running then has its writes refused (no position): its chunk
is retried by the queue (see the README's production notes).

Revision ID: 0026_evaluation_position
Revises: 0025_result_text_bytes
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rls import across_organizations

revision: str = "0026_evaluation_position"
down_revision: str | None = "0025_result_text_bytes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FROM_RESULTS = """
UPDATE evaluations e SET position = r.position FROM results r WHERE r.id = e.result_id
"""


def upgrade() -> None:
    op.add_column("evaluations", sa.Column("position", sa.Integer(), nullable=True))
    across_organizations(("evaluations", "results"), _FROM_RESULTS)
    op.alter_column("evaluations", "position", nullable=False)


def downgrade() -> None:
    op.drop_column("evaluations", "position")
