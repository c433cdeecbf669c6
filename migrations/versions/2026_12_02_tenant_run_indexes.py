"""tenant run indexes: row-level security's index on results, evaluations and run events leads
with the organization, then the run; results are indexed by test

Every read of a run's rows carries the policy's `organization_id = <the tenant>` beside its
`run_id = <the run>`. With the organization alone indexed, the planner often ANDs that index's
bitmap with the run's, which reads every index entry of the organization: in an organization of
40 runs of 100 results, comparing two runs handled 8,604 rows, and a stream's replay of one
run's events 4,400. Indexed on (organization_id, run_id), a run's rows are one range of the
same index, whatever the statistics know; the index keeps serving what only filters by
organization (the cascade of an organization's deletion).

Deleting a test sets its results' `test_id` to null, a statement run by the foreign key for
each test deleted, across every organization (row-level security does not apply to it).
`(run_id, test_id)` served it by skipping through every run of the installation: 18 ms per
test with 2,000 runs, so deleting a project of 10,000 tests took minutes. `(test_id)` finds a
test's results directly (0.04 ms for a test with none). Nothing reads results by run and test
any more (a comparison finds its flips' results by position), so it takes that index's place.

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

_TENANT_RUN = ["organization_id", "run_id"]
_ORGANIZATION = ["organization_id"]
# Each table's new indexes (their columns), and the indexes (name: columns) they replace.
INDEXES: dict[str, tuple[list[list[str]], dict[str, list[str]]]] = {
    "results": (
        [_TENANT_RUN, ["test_id"]],
        {
            "ix_results_organization_id": _ORGANIZATION,
            "ix_results_run_id_test_id": ["run_id", "test_id"],
        },
    ),
    "evaluations": ([_TENANT_RUN], {"ix_evaluations_organization_id": _ORGANIZATION}),
    "run_events": ([_TENANT_RUN], {"ix_run_events_organization_id": _ORGANIZATION}),
}


def _name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    for table, (new, replaced) in INDEXES.items():
        for columns in new:
            op.create_index(_name(table, columns), table, columns)
        for name in replaced:
            op.drop_index(name, table_name=table)


def downgrade() -> None:
    for table, (new, replaced) in INDEXES.items():
        for name, previous in replaced.items():
            op.create_index(name, table, previous)
        for columns in new:
            op.drop_index(_name(table, columns), table_name=table)
