"""retention: pruning of finished runs' events, finished jobs, expired sessions and invitations.

Revision ID: 0014_retention
Revises: 0013_provider_pacing
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0014_retention"
down_revision: str | None = "0013_provider_pacing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
