"""run prompted: a run remembers that it renders its cases through a prompt version

A run's prompt version goes NULL when its prompt is deleted (ON DELETE SET NULL), and a run
under way then went on without it: each chunk plans anew, found no version, and sent the raw
input, with no system prompt or parameters, and completed as if nothing had happened. The run
now keeps `prompted`, so that it fails, as one whose target was deleted does. Existing runs
take it from the version they name (one deleted before this migration is not known).

Revision ID: 0031_run_prompted
Revises: 0030_claim_skips_kinds
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rls import across_organizations

revision: str = "0031_run_prompted"
down_revision: str | None = "0030_claim_skips_kinds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("prompted", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    across_organizations(
        ["runs"], "UPDATE runs SET prompted = true WHERE prompt_version_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("runs", "prompted")
