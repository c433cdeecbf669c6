"""set member counts: a set keeps how many tests it holds, kept by the triggers that bump its
revision

Listing sets counted each set's members: ten sets of 200,000 tests took 0.35 to 0.5 s of the
database for every page of the list. The statement triggers on `test_set_members` that bump a
set's `content_revision` now also move its `member_count` by what the statement added or took
away (an insert, a delete, a cascade from a deleted test, a move between sets).

Revision ID: 0042_set_member_counts
Revises: 0041_run_model_digests
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rls import across_organizations

revision: str = "0042_set_member_counts"
down_revision: str | None = "0041_run_model_digests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As 0005_set_revisions, the sets' rows locked in id order first (no deadlock between two
# statements on overlapping sets); `{changes}` is a (test_set_id, change) row per member.
_COUNT_AND_BUMP = """
    PERFORM 1 FROM test_sets WHERE id IN (SELECT test_set_id FROM {changes}) ORDER BY id
        FOR NO KEY UPDATE;
    UPDATE test_sets AS s
        SET content_revision = s.content_revision + 1,
            member_count = s.member_count + c.change
        FROM (SELECT test_set_id, sum(change) AS change FROM {changes} GROUP BY test_set_id) AS c
        WHERE s.id = c.test_set_id;
    RETURN NULL;
"""
_COUNTING = {
    # The insert and the delete trigger share this function: TG_OP tells them apart.
    "assay_members_changed": (
        "(SELECT test_set_id, CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END AS change"
        " FROM changed_members) AS m"
    ),
    "assay_members_moved": (
        "(SELECT test_set_id, -1 AS change FROM old_members"
        " UNION ALL SELECT test_set_id, 1 FROM new_members) AS m"
    ),
}

# 0005_set_revisions' bodies, restored by the downgrade.
_BUMP = """
    PERFORM 1 FROM test_sets WHERE id IN (SELECT test_set_id FROM {source}) ORDER BY id
        FOR NO KEY UPDATE;
    UPDATE test_sets SET content_revision = content_revision + 1
        WHERE id IN (SELECT test_set_id FROM {source});
    RETURN NULL;
"""
_BUMPING = {
    "assay_members_changed": "changed_members",
    "assay_members_moved": (
        "(SELECT test_set_id FROM old_members UNION SELECT test_set_id FROM new_members) AS m"
    ),
}


def _replace(name: str, body: str) -> None:
    op.execute(
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" {body} END $$"
    )


def upgrade() -> None:
    # Members written meanwhile wait for the counts (and the triggers that keep them) to hold;
    # the sets first, as the service holds a set before it writes the set's members.
    op.execute("LOCK TABLE test_sets IN ACCESS EXCLUSIVE MODE")
    op.execute("LOCK TABLE test_set_members IN SHARE MODE")
    op.add_column(
        "test_sets", sa.Column("member_count", sa.BigInteger(), server_default="0", nullable=False)
    )
    for name, changes in _COUNTING.items():
        _replace(name, _COUNT_AND_BUMP.format(changes=changes))
    across_organizations(
        ("test_sets", "test_set_members"),
        "UPDATE test_sets AS s SET member_count = c.held"
        " FROM (SELECT test_set_id, count(*) AS held FROM test_set_members"
        " GROUP BY test_set_id) AS c WHERE s.id = c.test_set_id",
    )


def downgrade() -> None:
    for name, source in _BUMPING.items():
        _replace(name, _BUMP.format(source=source))
    op.drop_column("test_sets", "member_count")
