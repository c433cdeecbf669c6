"""run model digests: a run keeps a digest of each model it asks, as it was made

A model configuration is edited in place, and each chunk of a run read it anew: a model, its
address or its parameters changed between two chunks (or before a run's repeat or resume)
mixed two models' answers under one configuration's name, and the comparison, gate and pass@k
figures took them for one. A run now keeps each model's digest (results/model_pins.py); a
chunk that finds one changed fails the run saying so, and a repeat or resume is refused.

Revision ID: 0041_run_model_digests
Revises: 0040_claim_least_recently_served
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0041_run_model_digests"
down_revision: str | None = "0040_claim_least_recently_served"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("model_digests", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "model_digests")
