"""run counts: a run's results by status, kept on its row by statement-level triggers

Every batch a run writes ends with a progress event holding the run's counts, and every read of
a run shows them: counting its results each time read the whole run, so a 100,000-case run spent
more of the database's time counting than writing (20 million rows counted in 428 batches).
The triggers add each statement's inserted (or deleted) results to their runs' rows, whoever
writes them; the run's writers hold its row lock already, so they take no new lock.

Revision ID: 0016_run_counts
Revises: 0015_metrics_snapshot
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_run_counts"
down_revision: str | None = "0015_metrics_snapshot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("results_done", "results_passed", "results_failed", "results_errored")

# The runs' rows are locked in id order first: two statements touching the same runs queue
# behind each other instead of deadlocking.
_COUNT = """
    PERFORM 1 FROM runs WHERE id IN (SELECT run_id FROM {source}) ORDER BY id
        FOR NO KEY UPDATE;
    UPDATE runs AS r SET
        results_done = r.results_done {sign} c.done,
        results_passed = r.results_passed {sign} c.passed,
        results_failed = r.results_failed {sign} c.failed,
        results_errored = r.results_errored {sign} c.errored
    FROM (
        SELECT run_id, count(*) AS done,
               count(*) FILTER (WHERE status = 'passed') AS passed,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'errored') AS errored
        FROM {source} GROUP BY run_id
    ) AS c
    WHERE r.id = c.run_id;
    RETURN NULL;
"""
# Runs made before: their counts from their results.
BACKFILL = (
    "UPDATE runs AS r SET results_done = c.done, results_passed = c.passed,"
    " results_failed = c.failed, results_errored = c.errored"
    " FROM (SELECT run_id, count(*) AS done,"
    " count(*) FILTER (WHERE status = 'passed') AS passed,"
    " count(*) FILTER (WHERE status = 'failed') AS failed,"
    " count(*) FILTER (WHERE status = 'errored') AS errored"
    " FROM results GROUP BY run_id) AS c WHERE r.id = c.run_id"
)
_TRIGGERS = {
    "assay_results_inserted": ("INSERT", "NEW TABLE AS changed_results", "+"),
    "assay_results_deleted": ("DELETE", "OLD TABLE AS changed_results", "-"),
}


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column(
            "runs", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False)
        )
    op.execute(BACKFILL)
    for name, (event, tables, sign) in _TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" {_COUNT.format(sign=sign, source='changed_results')} END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON results REFERENCING {tables}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def downgrade() -> None:
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON results")
        op.execute(f"DROP FUNCTION {name}()")
    for column in COLUMNS:
        op.drop_column("runs", column)
