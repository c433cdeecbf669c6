"""test input check: a test's row holds an input, a non-empty chat or a conversation

The check the tests table was created with (`input IS NOT NULL OR messages IS NOT NULL`) held
for every row: a test without messages stores them as a JSON null, which is not SQL's NULL.
And as written it would have refused a conversation-only test, which the API accepts. The
check now says what the API's validation says (`TestCaseFields`): an input, messages that are
a non-empty list, or a conversation object.

It is added NOT VALID: new and updated rows are checked, the rows already there are not read.
Each of them went through the API's validation, and a migration runs in one transaction, so
validating here would scan the whole table while the new check's lock shuts out every read
and write of it.

Revision ID: 0024_test_input_check
Revises: 0023_metric_judge_index
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024_test_input_check"
down_revision: str | None = "0023_metric_judge_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_tests_has_input"
# coalesce: a check holds when its condition is NULL, as it is for a column left NULL.
HAS_INPUT = (
    "input IS NOT NULL"
    " OR coalesce(jsonb_typeof(messages) = 'array' AND messages <> '[]'::jsonb, false)"
    " OR coalesce(jsonb_typeof(conversation) = 'object', false)"
)
OLD_HAS_INPUT = "input IS NOT NULL OR messages IS NOT NULL"


def upgrade() -> None:
    _replace(HAS_INPUT)


def downgrade() -> None:
    _replace(OLD_HAS_INPUT)


def _replace(condition: str) -> None:
    op.execute(f"ALTER TABLE tests DROP CONSTRAINT {NAME}")
    op.execute(f"ALTER TABLE tests ADD CONSTRAINT {NAME} CHECK ({condition}) NOT VALID")
