"""tenant run indexes: row-level security's index on results and evaluations leads with the
organization, then the run

Every read of a run's rows carries the policy's `organization_id = <the tenant>` beside its
`run_id = <the run>`. With the organization alone indexed, the planner often ANDs that index's
bitmap with the run's, which reads every index entry of the organization: a comparison of two
runs of 100 results, in an organization of 40 such runs, handled 8,600 rows for its 200. Indexed
on (organization_id, run_id), a run's rows are one range of the same index, whatever the
statistics know; the index keeps serving what only filters by organization (the cascade of an
organization's deletion).

Revision ID: 0017_tenant_run_indexes
Revises: 0016_run_counts
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_tenant_run_indexes"
down_revision: str | None = "0016_run_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("results", "evaluations")


def upgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_organization_id_run_id", table, ["organization_id", "run_id"])
        op.drop_index(f"ix_{table}_organization_id", table_name=table)


def downgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_organization_id", table, ["organization_id"])
        op.drop_index(f"ix_{table}_organization_id_run_id", table_name=table)
