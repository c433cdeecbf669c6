"""version slices: each version keeps its cases' behavior, category and topic as codes

A comparison groups a run's cases by their slices. It read them out of every case's JSON, in
a query of its own, then matched 100,000s of values to codes: about a quarter of the time of a
comparison of two 100,000-case runs. A version never changes once written, so its slices are
now kept with it when it is published: per slice its distinct values (in the order first met)
and each case's index among them, in position order (big-endian int4, one slice after the
other).

Existing versions take theirs from their cases, across every organization, the same as a
publish would give (values in the order first met). Then the columns are made NOT NULL: a
previous release's process still publishing has its versions refused from then on.

The migration reads every pinned case once, and holds exclusive locks on test_set_versions
(the new columns) and test_set_version_cases (row-level security lifted for the backfill) to
its end: runs cannot start, nor comparisons or exports read versions, while it runs.

Revision ID: 0027_version_slices
Revises: 0026_evaluation_position
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.rls import across_organizations

revision: str = "0027_version_slices"
down_revision: str | None = "0026_evaluation_position"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SLICES = ("behavior", "category", "topic")
_NAMED = ", ".join(f"""({at}, c."case" ->> '{field}')""" for at, field in enumerate(SLICES))
_FROM_CASES = f"""
WITH sliced AS (
    SELECT c.version_id, c.position, s.at, s.value, coalesce('v' || s.value, 'n') AS key
    FROM test_set_version_cases c CROSS JOIN LATERAL (VALUES {_NAMED}) AS s(at, value)
), coded AS (
    SELECT version_id, at, key, value,
           CAST(row_number() OVER (PARTITION BY version_id, at ORDER BY min(position)) - 1
                AS integer) AS code
    FROM sliced GROUP BY version_id, at, key, value
), listed AS (
    SELECT version_id, at, jsonb_agg(to_jsonb(value) ORDER BY code) AS "values"
    FROM coded GROUP BY version_id, at
), per_slice AS (
    SELECT s.version_id, s.at, string_agg(int4send(c.code), ''::bytea ORDER BY s.position) AS codes,
           count(*) AS cases, max(s.position) AS last
    FROM sliced s JOIN coded c USING (version_id, at, key)
    GROUP BY s.version_id, s.at
)
UPDATE test_set_versions v
SET slice_values = found."values", slice_codes = found.codes
FROM (
    SELECT p.version_id,
           jsonb_object_agg((ARRAY{list(SLICES)})[p.at + 1], l."values") AS "values",
           string_agg(p.codes, ''::bytea ORDER BY p.at) AS codes,
           min(p.cases) AS cases, min(p.last) AS last
    FROM per_slice p JOIN listed l USING (version_id, at)
    GROUP BY p.version_id
) AS found
WHERE found.version_id = v.id AND found.cases = v.case_count AND found.last = v.case_count - 1
"""
# A version whose cases are not its positions 0..case_count - 1 (none is written so) is left
# without slices, and the migration fails on NOT NULL rather than keep codes that misplace.
_EMPTY = """
UPDATE test_set_versions
SET slice_values = '{"behavior": [], "category": [], "topic": []}', slice_codes = ''::bytea
WHERE slice_values IS NULL AND case_count = 0
"""


def upgrade() -> None:
    op.add_column(
        "test_set_versions",
        sa.Column("slice_values", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column("test_set_versions", sa.Column("slice_codes", sa.LargeBinary(), nullable=True))
    across_organizations(("test_set_versions", "test_set_version_cases"), _FROM_CASES, _EMPTY)
    op.alter_column("test_set_versions", "slice_values", nullable=False)
    op.alter_column("test_set_versions", "slice_codes", nullable=False)


def downgrade() -> None:
    op.drop_column("test_set_versions", "slice_codes")
    op.drop_column("test_set_versions", "slice_values")
