"""test set revisions: a counter that any change to a set's cases bumps (kept by triggers),
so that pinning the current version of an unchanged set needs no read of its cases

Revision ID: 0005_set_revisions
Revises: 0004_live_runs
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_set_revisions"
down_revision: str | None = "0004_live_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The sets' rows are locked in id order first: two statements bumping overlapping sets then
# queue behind each other instead of deadlocking.
_BUMP = """
    PERFORM 1 FROM test_sets WHERE id IN (SELECT test_set_id FROM {source}) ORDER BY id
        FOR NO KEY UPDATE;
    UPDATE test_sets SET content_revision = content_revision + 1
        WHERE id IN (SELECT test_set_id FROM {source});
    RETURN NULL;
"""
_FUNCTIONS = {
    "assay_members_changed": "changed_members",
    "assay_members_moved": (
        "(SELECT test_set_id FROM old_members UNION SELECT test_set_id FROM new_members) AS m"
    ),
    "assay_tests_changed": (
        "(SELECT m.test_set_id FROM test_set_members AS m"
        " JOIN changed_tests AS t ON t.id = m.test_id) AS m"
    ),
}
_TRIGGERS = (
    (
        "test_set_members_inserted",
        "INSERT ON test_set_members",
        "NEW TABLE AS changed_members",
        "assay_members_changed",
    ),
    (
        "test_set_members_deleted",
        "DELETE ON test_set_members",
        "OLD TABLE AS changed_members",
        "assay_members_changed",
    ),
    (
        "test_set_members_updated",
        "UPDATE ON test_set_members",
        "OLD TABLE AS old_members NEW TABLE AS new_members",
        "assay_members_moved",
    ),
    ("tests_updated", "UPDATE ON tests", "NEW TABLE AS changed_tests", "assay_tests_changed"),
)


def upgrade() -> None:
    op.add_column(
        "test_sets",
        sa.Column("content_revision", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column("test_sets", sa.Column("published_revision", sa.BigInteger(), nullable=True))
    for name, source in _FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" {_BUMP.format(source=source)} END $$"
        )
    for trigger, event, tables, function in _TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {trigger} AFTER {event} REFERENCING {tables}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )


def downgrade() -> None:
    for trigger, event, _, _ in _TRIGGERS:
        op.execute(f"DROP TRIGGER {trigger} ON {event.split(' ON ')[1]}")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_column("test_sets", "published_revision")
    op.drop_column("test_sets", "content_revision")
