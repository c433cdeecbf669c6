"""invitation key makers: an invitation sent with an API key remembers it

An invitation sent with a key recorded only the person behind the key: revoking the key (a
leaked admin key, say) left the invitations it had sent open for 72 hours, and one accepted
made its holder a member for good, with keys of their own. An invitation now keeps the key it
was sent with, if any: revoking that key revokes it too, and it expires no later than the key.

Revision ID: 0038_invitation_key_makers
Revises: 0037_claim_takes_turns
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0038_invitation_key_makers"
down_revision: str | None = "0037_claim_takes_turns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "invitations",
        sa.Column(
            "created_with_key_id",
            sa.Uuid(),
            sa.ForeignKey(
                "api_keys.id",
                name="fk_invitations_created_with_key_id_api_keys",
                ondelete="SET NULL",
            ),
            nullable=True,
        ),
    )
    op.create_index("ix_invitations_created_with_key_id", "invitations", ["created_with_key_id"])


def downgrade() -> None:
    op.drop_index("ix_invitations_created_with_key_id", table_name="invitations")
    op.drop_column("invitations", "created_with_key_id")
