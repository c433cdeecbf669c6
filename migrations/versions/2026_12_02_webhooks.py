"""project webhooks: endpoints, their secrets and the delivery log.

Revision ID: 0012_webhooks
Revises: 0011_audit_log
Create Date: 2026-12-02
"""

from collections.abc import Sequence

revision: str = "0012_webhooks"
down_revision: str | None = "0011_audit_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
