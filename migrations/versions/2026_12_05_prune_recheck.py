"""prune recheck: a run's events are deleted only while the run is still ended and past the
period, judged by the statement that deletes them

`assay_retention_prune` (0014) reads the runs to prune once, then deletes each one's events by
its id. A run reopened meanwhile (a repeat or a resume committed between the two) lost the new
events of its live log: the delete's own snapshot saw them, and nothing in it looked at the
run again. The delete now checks the run in the same statement: a reopening it sees is one
whose events it leaves, and one it does not see brought no event it could see either.

The function is changed in place (its owner, grants and every other kind as they are).

Revision ID: 0029_prune_recheck
Revises: 0028_counted_results
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.functions import edited_definition

revision: str = "0029_prune_recheck"
down_revision: str | None = "0028_counted_results"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "assay_retention_prune(integer, integer, integer, integer, integer, integer)"
BEFORE = "DELETE FROM run_events e WHERE e.run_id = ended_run;"
AFTER = """DELETE FROM run_events e WHERE e.run_id = ended_run
             AND EXISTS (SELECT 1 FROM runs r
                          WHERE r.id = ended_run
                            AND r.status IN ('completed', 'failed', 'cancelled', 'stopped')
                            AND coalesce(r.finished_at, r.updated_at) < cutoff);"""


def _replace(old: str, new: str) -> None:
    op.execute(sa.text(edited_definition(FUNCTION, [(old, new)])))


def upgrade() -> None:
    _replace(BEFORE, AFTER)


def downgrade() -> None:
    _replace(AFTER, BEFORE)
