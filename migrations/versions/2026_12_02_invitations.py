"""invitations: joining an organization takes the invitee's consent. An invitation (a role for
an email) is accepted once, before it expires, by the account with that email; only the
token's hash is stored. The invitee is no member yet, so the lookup by hash is a credential
lookup like the others: a SECURITY DEFINER function owned by assay_auth.

Revision ID: 0009_invitations
Revises: 0008_job_takeovers
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rls import AUTH_ROLE, allow_auth_lookup, enable_tenant_rls

revision: str = "0009_invitations"
down_revision: str | None = "0008_job_takeovers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = sa.Uuid()
TIMESTAMPTZ = sa.DateTime(timezone=True)
LOOKUP = "assay_auth_invitation(p_hash text)"


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "organization_id",
            UUID,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", UUID, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("expires_at", TIMESTAMPTZ, nullable=False),
        sa.Column("accepted_at", TIMESTAMPTZ),
        sa.Column("accepted_by", UUID, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("revoked_at", TIMESTAMPTZ),
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("token_hash"),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role"),
    )
    enable_tenant_rls("invitations")
    allow_auth_lookup("invitations")

    op.execute(
        f"""CREATE FUNCTION {LOOKUP}
            RETURNS TABLE (id uuid, organization_id uuid, email text, role text,
                           expires_at timestamptz, accepted_at timestamptz,
                           revoked_at timestamptz)
            AS $$ SELECT i.id, i.organization_id, i.email, i.role, i.expires_at,
                         i.accepted_at, i.revoked_at
                  FROM invitations i WHERE i.token_hash = p_hash $$
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp"""
    )
    op.execute(f"ALTER FUNCTION {LOOKUP} OWNER TO {AUTH_ROLE}")
    op.execute(f"REVOKE ALL ON FUNCTION {LOOKUP} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {LOOKUP} TO assay_app")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS assay_auth_invitation(text)")
    op.drop_table("invitations")
