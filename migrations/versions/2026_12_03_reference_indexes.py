"""reference indexes: every foreign key of runs, projects, prompt labels and test sets' metrics
leads an index, so that deleting what they name reads only the rows naming it

Deleting a run nulls the references to it (a rescore's source, a rerun's parent, a project's
baseline), and deleting a model, a prompt version or a test set's version does the same to the
runs naming it (or deletes them); unindexed, each of these read the whole table, across every
organization, once per deleted row. A project's deletion deletes its runs, versions and
prompts, so it grew as the square of its runs: 82 ms with 1,000 runs, 822 ms with 4,000 and
11.8 s with 16,000 here. A version's index is whole (every run names one); the others index
only the rows that name something. A prompt version's labels and a metric's places in test
sets' defaults, deleted with them, are found by index too.

Revision ID: 0022_reference_indexes
Revises: 0021_evaluation_metric_reference
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_reference_indexes"
down_revision: str | None = "0021_evaluation_metric_reference"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NULLABLE = {
    "runs": (
        "target_model_id",
        "simulator_model_id",
        "prompt_version_id",
        "parent_run_id",
        "outputs_from_run_id",
    ),
    "projects": ("default_target_model_id", "default_judge_model_id", "baseline_run_id"),
}
WHOLE = {
    "runs": "test_set_version_id",
    "prompt_labels": "version_id",
    "test_set_metrics": "metric_id",
}


def upgrade() -> None:
    for table, column in WHOLE.items():
        op.create_index(f"ix_{table}_{column}", table, [column])
    for table, columns in NULLABLE.items():
        for column in columns:
            op.create_index(
                f"ix_{table}_{column}",
                table,
                [column],
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
            )


def downgrade() -> None:
    for table, columns in NULLABLE.items():
        for column in columns:
            op.drop_index(f"ix_{table}_{column}", table_name=table)
    for table, column in WHOLE.items():
        op.drop_index(f"ix_{table}_{column}", table_name=table)
