"""version key deferrable: a version's cases may be written before the version itself, within
one transaction, their key to it checked at commit

Publishing a set read its cases twice: a first pass for their digest (an unchanged set keeps its
latest version), then a second to copy them under a version written between the two passes,
whole (versions are immutable: the runtime role may not UPDATE one). With the key deferrable,
one pass hashes and copies each page under the id of a version written after its last case,
once its digest is known. The key stays immediate everywhere else (INITIALLY IMMEDIATE):
only the publish defers it, for its own transaction.

Revision ID: 0020_version_key_deferrable
Revises: 0019_run_keys
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_version_key_deferrable"
down_revision: str | None = "0019_run_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "fk_test_set_version_cases_version_id_test_set_versions"


def upgrade() -> None:
    op.execute(
        f"ALTER TABLE test_set_version_cases ALTER CONSTRAINT {KEY} DEFERRABLE INITIALLY IMMEDIATE"
    )


def downgrade() -> None:
    op.execute(f"ALTER TABLE test_set_version_cases ALTER CONSTRAINT {KEY} NOT DEFERRABLE")
