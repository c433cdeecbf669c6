"""counted results: an UPDATE may not change what a run's counts count of a result (its run,
organization or status)

run_counts (0016) adds each inserted result and takes away each deleted one, by run and status;
every run's counts, its summary's progress and a results page's total are read from it.
Nothing in the service updates those columns of a result (a result is written once; its
test_id may go NULL with its test, and its text_bytes be filled in), but the runtime role
may UPDATE the table: a changed status would leave the counts quietly wrong. Now it fails.

Revision ID: 0028_counted_results
Revises: 0027_version_slices
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028_counted_results"
down_revision: str | None = "0027_version_slices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "assay_results_counted_unchanged"
COUNTED = ("run_id", "organization_id", "status")


def upgrade() -> None:
    op.execute(f"""
        CREATE FUNCTION {NAME}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'a result''s run, organization and status never change'
                USING ERRCODE = 'restrict_violation';
        END $$""")
    old, new = (", ".join(f"{row}.{column}" for column in COUNTED) for row in ("OLD", "NEW"))
    op.execute(f"""
        CREATE TRIGGER {NAME} BEFORE UPDATE OF {", ".join(COUNTED)} ON results FOR EACH ROW
        WHEN (({old}) IS DISTINCT FROM ({new})) EXECUTE FUNCTION {NAME}()""")


def downgrade() -> None:
    op.execute(f"DROP TRIGGER {NAME} ON results")
    op.execute(f"DROP FUNCTION {NAME}()")
