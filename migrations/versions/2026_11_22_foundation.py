"""foundation: roles, users, organizations, memberships, API keys, sessions, row-level security

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.rls import (
    AUTH_ROLE,
    CURRENT_ORGANIZATION,
    CURRENT_USER,
    allow_auth_lookup,
    enable_rls,
    enable_tenant_rls,
)

revision: str = "0001_foundation"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = sa.Uuid()
TIMESTAMPTZ = sa.DateTime(timezone=True)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", TIMESTAMPTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, server_default=sa.func.now(), nullable=False),
    ]


def _roles() -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'assay_app') THEN
            CREATE ROLE assay_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
          END IF;
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AUTH_ROLE}') THEN
            CREATE ROLE {AUTH_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
          END IF;
          -- A non-superuser owner must be able to act as assay_auth to hand it the functions.
          IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('GRANT {AUTH_ROLE} TO %I', current_user);
          END IF;
        END $$;
        """
    )
    op.execute("GRANT USAGE ON SCHEMA public TO assay_app")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {AUTH_ROLE}")


def _context_functions() -> None:
    for name, setting in (
        ("assay_current_organization", "app.organization_id"),
        ("assay_current_user", "app.user_id"),
    ):
        op.execute(
            f"""
            CREATE FUNCTION {name}() RETURNS uuid LANGUAGE sql STABLE AS
            $$ SELECT nullif(current_setting('{setting}', true), '')::uuid $$
            """
        )


def _tables() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(100), nullable=False),
        sa.Column("is_active", sa.Boolean, server_default="true", nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "organizations",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        *_timestamps(),
    )
    op.create_table(
        "memberships",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "organization_id",
            UUID,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column(
            "user_id",
            UUID,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("organization_id", "user_id"),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "organization_id",
            UUID,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("display_prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_by", UUID, sa.ForeignKey("users.id", ondelete="SET NULL")),
        sa.Column("expires_at", TIMESTAMPTZ),
        sa.Column("last_used_at", TIMESTAMPTZ),
        sa.Column("revoked_at", TIMESTAMPTZ),
        *_timestamps(),
        sa.UniqueConstraint("key_hash"),
        sa.CheckConstraint("role IN ('admin', 'member', 'viewer')", name="role"),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "organization_id",
            UUID,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("revoked_at", TIMESTAMPTZ),
        *_timestamps(),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "session_id",
            UUID,
            sa.ForeignKey("auth_sessions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("user_id", UUID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "organization_id",
            UUID,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", TIMESTAMPTZ, nullable=False),
        sa.Column("used_at", TIMESTAMPTZ),
        *_timestamps(),
        sa.UniqueConstraint("token_hash"),
    )


def _policies() -> None:
    org, user = CURRENT_ORGANIZATION, CURRENT_USER

    # users: yourself, and the members of the organization you are acting in.
    enable_rls("users")
    op.execute(
        f"""CREATE POLICY users_visible ON users FOR SELECT USING (
              id = {user}
              OR id IN (SELECT m.user_id FROM memberships m WHERE m.organization_id = {org}))"""
    )
    op.execute(f"CREATE POLICY users_self ON users USING (id = {user}) WITH CHECK (id = {user})")
    allow_auth_lookup("users")

    # organizations: the current one, and (read only) every one you belong to.
    enable_rls("organizations")
    op.execute(
        f"""CREATE POLICY organizations_visible ON organizations FOR SELECT USING (
              id = {org}
              OR EXISTS (SELECT 1 FROM memberships m
                         WHERE m.organization_id = organizations.id AND m.user_id = {user}))"""
    )
    op.execute(
        f"CREATE POLICY organizations_current ON organizations"
        f" USING (id = {org}) WITH CHECK (id = {org})"
    )

    # memberships: tenant rows, plus (read only) your own memberships elsewhere.
    enable_tenant_rls("memberships")
    op.execute(f"CREATE POLICY memberships_own ON memberships FOR SELECT USING (user_id = {user})")

    enable_tenant_rls("api_keys")
    allow_auth_lookup("api_keys")

    for table in ("auth_sessions", "refresh_tokens"):
        enable_rls(table)
        own = f"organization_id = {org} AND user_id = {user}"
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({own}) WITH CHECK ({own})")
        allow_auth_lookup(table)


def _auth_functions() -> None:
    """Credential lookups that must work before any tenant is known.

    They run as assay_auth (SECURITY DEFINER), which may read only these tables through the
    auth_lookup policies; the runtime role can call them but never read the tables freely.
    """
    functions = {
        "assay_auth_user_by_email(p_email text)": """
            RETURNS TABLE (id uuid, password_hash text, is_active boolean)
            AS $$ SELECT u.id, u.password_hash, u.is_active FROM users u
                  WHERE u.email = lower(p_email) $$""",
        "assay_auth_api_key(p_hash text)": """
            RETURNS TABLE (id uuid, organization_id uuid, role text,
                           expires_at timestamptz, revoked_at timestamptz)
            AS $$ SELECT k.id, k.organization_id, k.role, k.expires_at, k.revoked_at
                  FROM api_keys k WHERE k.key_hash = p_hash $$""",
        "assay_auth_refresh_token(p_hash text)": """
            RETURNS TABLE (id uuid, session_id uuid, user_id uuid, organization_id uuid,
                           expires_at timestamptz, used_at timestamptz,
                           session_revoked_at timestamptz)
            AS $$ SELECT t.id, t.session_id, t.user_id, t.organization_id, t.expires_at,
                         t.used_at, s.revoked_at
                  FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id
                  WHERE t.token_hash = p_hash $$""",
    }
    for signature, body in functions.items():
        op.execute(
            f"CREATE FUNCTION {signature} {body}"
            " LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp"
        )
        op.execute(f"ALTER FUNCTION {signature} OWNER TO {AUTH_ROLE}")
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO assay_app")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    _roles()
    _context_functions()
    _tables()
    _policies()
    _auth_functions()


def downgrade() -> None:
    for signature in (
        "assay_auth_refresh_token(text)",
        "assay_auth_api_key(text)",
        "assay_auth_user_by_email(text)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    # These two read memberships, which cannot be dropped while they stand.
    op.execute("DROP POLICY users_visible ON users")
    op.execute("DROP POLICY organizations_visible ON organizations")
    for table in (
        "refresh_tokens",
        "auth_sessions",
        "api_keys",
        "memberships",
        "organizations",
        "users",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS assay_current_user()")
    op.execute("DROP FUNCTION IF EXISTS assay_current_organization()")
