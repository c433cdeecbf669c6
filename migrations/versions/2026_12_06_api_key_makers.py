"""api key makers: a key made with another key remembers it

A key may make keys (an admin key, an admin's). Those recorded only the person behind it, so
revoking the key left what it had made working, and a key made to expire in an hour could make
one that never did. A key now keeps the key it was made with, if any: revoking that key
revokes it too, and it cannot outlive it.

Revision ID: 0035_api_key_makers
Revises: 0034_response_cache_retention
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0035_api_key_makers"
down_revision: str | None = "0034_response_cache_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column(
            "created_with_key_id",
            sa.Uuid(),
            sa.ForeignKey(
                "api_keys.id",
                name="fk_api_keys_created_with_key_id_api_keys",
                ondelete="SET NULL",
            ),
            nullable=True,
        ),
    )
    op.create_index("ix_api_keys_created_with_key_id", "api_keys", ["created_with_key_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_created_with_key_id", table_name="api_keys")
    op.drop_column("api_keys", "created_with_key_id")
