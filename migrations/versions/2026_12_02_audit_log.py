"""audit log: who changed what, when and from where (append-only for the runtime role).

Revision ID: 0011_audit_log
Revises: 0010_agents
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0011_audit_log"
down_revision: str | None = "0010_agents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
