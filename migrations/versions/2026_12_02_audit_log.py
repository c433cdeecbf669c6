"""audit log: who changed what, when and from where (append-only for the runtime role).

One row per recorded change, written in the transaction of the change. Under row-level
security like every tenant table. Rows are never changed or removed while the service runs:
UPDATE, DELETE and TRUNCATE are refused by statement triggers, for every role, with the
`insufficient_privilege` error a missing grant gives (the runtime's table grants are
re-applied on every migration run, so the triggers are what holds whatever those grants say).

No foreign keys: an entry names users, API keys and targets that may be gone since, and an
organization's entries outlive the organization (the record of its deletion included); the
operator reads them with the owner role.

Revision ID: 0011_audit_log
Revises: 0010_agents
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import INET, JSONB

from migrations.rls import enable_tenant_rls

revision: str = "0011_audit_log"
down_revision: str | None = "0010_agents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = sa.Uuid()
GUARD = "assay_audit_log_append_only"


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("organization_id", UUID, nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_user_id", UUID),
        sa.Column("actor_api_key_id", UUID),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", UUID),
        sa.Column("details", JSONB, nullable=False, server_default="{}"),
        sa.Column("ip", INET),
        sa.Column("user_agent", sa.String(512)),
        sa.Column("request_id", sa.String(128)),
        # The moment of writing (not the transaction's start): entries of one transaction
        # keep their order in time.
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint("actor_kind IN ('user', 'api_key')", name="actor_kind"),
        sa.CheckConstraint(
            "(actor_kind = 'user') = (actor_user_id IS NOT NULL)"
            " AND (actor_kind = 'api_key') = (actor_api_key_id IS NOT NULL)",
            name="actor",
        ),
        sa.CheckConstraint(r"action ~ '^[a-z_]+\.[a-z_]+$'", name="action"),
    )
    # Newest first within an organization (the read's keyset), and an entity's history.
    op.create_index(
        "ix_audit_log_organization_id_created_at_id",
        "audit_log",
        ["organization_id", "created_at", "id"],
    )
    op.create_index(
        "ix_audit_log_organization_id_target_type_target_id",
        "audit_log",
        ["organization_id", "target_type", "target_id"],
    )
    enable_tenant_rls("audit_log")
    op.execute(
        f"""CREATE FUNCTION {GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'permission denied: the audit log is append-only (% refused)',
                TG_OP USING ERRCODE = 'insufficient_privilege';
            END $$"""
    )
    op.execute(
        f"CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_log"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {GUARD}()"
    )
    op.execute(
        f"CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON audit_log"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {GUARD}()"
    )


def downgrade() -> None:
    op.drop_table("audit_log")  # its triggers and policy go with it
    op.execute(f"DROP FUNCTION IF EXISTS {GUARD}()")
