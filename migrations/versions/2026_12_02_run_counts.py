"""run counts: each run's results by status, in a table of their own kept by statement-level
triggers on `results`

Every batch a run writes ends with a progress event holding the run's counts, and every read of
a run shows them: counting its results each time read the whole run, so a 100,000-case run
spent more of the database's time counting than writing (20 million rows counted in 200
batches). The triggers add each statement's inserted (or deleted) results to `run_counts`,
whoever writes them.

Not columns of `runs`: a writer that updated its run's row twice in one transaction (the counts,
then the event sequence) made PostgreSQL re-check the row's foreign keys on the second update,
and a model deleted meanwhile (whose ON DELETE SET NULL waits for the run's row) deadlocked with
it. `run_counts` references no run (a run's counts go with it by a trigger on `runs`), so
keeping them takes no lock on anything but their own row; the run's writers hold the run's row
lock already, so they queue in the same order as before.

Revision ID: 0016_run_counts
Revises: 0015_metrics_snapshot
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rls import across_organizations, enable_tenant_rls

revision: str = "0016_run_counts"
down_revision: str | None = "0015_metrics_snapshot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTS = ("done", "passed", "failed", "errored")
_TALLY = """SELECT run_id, organization_id, count(*) AS done,
           count(*) FILTER (WHERE status = 'passed') AS passed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'errored') AS errored
    FROM {source} GROUP BY run_id, organization_id"""
_ADDED = f"""
    INSERT INTO run_counts AS c (run_id, organization_id, done, passed, failed, errored)
    {_TALLY.format(source="changed_results")} ORDER BY run_id
    ON CONFLICT (run_id) DO UPDATE SET
        done = c.done + excluded.done, passed = c.passed + excluded.passed,
        failed = c.failed + excluded.failed, errored = c.errored + excluded.errored;
    RETURN NULL;"""
_REMOVED = f"""
    UPDATE run_counts AS c SET
        done = c.done - d.done, passed = c.passed - d.passed,
        failed = c.failed - d.failed, errored = c.errored - d.errored
    FROM ({_TALLY.format(source="changed_results")}) AS d
    WHERE c.run_id = d.run_id;
    RETURN NULL;"""
_RUNS_REMOVED = """
    DELETE FROM run_counts WHERE run_id IN (SELECT id FROM removed_runs);
    RETURN NULL;"""
# name: (table, event, transition table, body)
TRIGGERS = {
    "assay_results_added": ("results", "INSERT", "NEW TABLE AS changed_results", _ADDED),
    "assay_results_removed": ("results", "DELETE", "OLD TABLE AS changed_results", _REMOVED),
    "assay_runs_removed": ("runs", "DELETE", "OLD TABLE AS removed_runs", _RUNS_REMOVED),
}
# Runs made before: their counts from their results.
BACKFILL = f"""
    INSERT INTO run_counts (run_id, organization_id, done, passed, failed, errored)
    {_TALLY.format(source="results")}
    ON CONFLICT (run_id) DO UPDATE SET done = excluded.done, passed = excluded.passed,
        failed = excluded.failed, errored = excluded.errored"""


def upgrade() -> None:
    op.create_table(
        "run_counts",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False) for name in COUNTS),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_run_counts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_counts")),
    )
    op.create_index(op.f("ix_run_counts_organization_id"), "run_counts", ["organization_id"])
    across_organizations(("results",), BACKFILL)
    enable_tenant_rls("run_counts")
    for name, (table, event, transition, body) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN{body}\n END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def downgrade() -> None:
    for name, (table, *_) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name} ON {table}")
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("run_counts")
