"""provider request limits shared by every process on the database.

Revision ID: 0013_provider_pacing
Revises: 0012_webhooks
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0013_provider_pacing"
down_revision: str | None = "0012_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
