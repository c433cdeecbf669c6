"""run keys: results, evaluations and run events name their run and its organization by one
foreign key, (run_id, organization_id) to runs' (id, organization_id)

Each of these rows named its run and its organization by two foreign keys, which PostgreSQL
checks one row at a time: a flush of 430 results and their 860 evaluations ran 4,730 checks,
more than half of the two inserts' time. One key to the run's (id, organization_id) takes the
place of the two, 1,290 checks fewer there, and says more: a row's organization is its run's.
Row-level security's check held a row to the transaction's organization, and the two keys held
it to some run and some organization, which nothing held to each other (a foreign key's check
does not see the policy). An organization's deletion still reaches every such row, through its
runs.

The tenant indexes (organization_id, run_id) (migration 0017_tenant_run_indexes) lead with the
new key's columns and serve its cascade; evaluations' own index on run_id served only the run's
key it replaces, and goes with it (one index fewer written with every evaluation).

Revision ID: 0019_run_keys
Revises: 0018_policy_once_per_statement
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019_run_keys"
down_revision: str | None = "0018_policy_once_per_statement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("results", "evaluations", "run_events")
RUN_KEY = "uq_runs_id_organization_id"


def _run_fk(table: str) -> str:
    # The naming convention's name (database/core.py) for a key whose first column is run_id:
    # the run's key keeps its name, one column longer.
    return f"fk_{table}_run_id_runs"


def _organization_fk(table: str) -> str:
    return f"fk_{table}_organization_id_organizations"


def upgrade() -> None:
    op.create_unique_constraint(RUN_KEY, "runs", ["id", "organization_id"])
    for table in TABLES:
        op.drop_constraint(_organization_fk(table), table, type_="foreignkey")
        op.drop_constraint(_run_fk(table), table, type_="foreignkey")
        op.create_foreign_key(
            _run_fk(table),
            table,
            "runs",
            ["run_id", "organization_id"],
            ["id", "organization_id"],
            ondelete="CASCADE",
        )
    op.drop_index("ix_evaluations_run_id", table_name="evaluations")


def downgrade() -> None:
    op.create_index("ix_evaluations_run_id", "evaluations", ["run_id"])
    for table in TABLES:
        op.drop_constraint(_run_fk(table), table, type_="foreignkey")
        op.create_foreign_key(_run_fk(table), table, "runs", ["run_id"], ["id"], ondelete="CASCADE")
        op.create_foreign_key(
            _organization_fk(table),
            table,
            "organizations",
            ["organization_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.drop_constraint(RUN_KEY, "runs", type_="unique")
