"""run request keys: `POST /runs` takes an Idempotency-Key

A client that sent a run and lost the answer (a dropped connection, a proxy's 502, a CI job
retried) could only send it again, and start a second run that calls the providers and spends
the budget again. A run now keeps the key it was asked with (unique in its organization) and
a digest of what was asked: the same key again gives the same run, and a key sent with
another request is refused.

Revision ID: 0033_run_request_keys
Revises: 0032_claim_per_organization
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033_run_request_keys"
down_revision: str | None = "0032_claim_per_organization"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("request_key", sa.String(200), nullable=True))
    op.add_column("runs", sa.Column("request_digest", sa.String(64), nullable=True))
    op.create_index(
        "uq_runs_request_key",
        "runs",
        ["organization_id", "request_key"],
        unique=True,
        postgresql_where=sa.text("request_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_runs_request_key", table_name="runs")
    op.drop_column("runs", "request_digest")
    op.drop_column("runs", "request_key")
