"""Row-level security building blocks for migrations.

Every table carrying organization_id gets `enable_tenant_rls`: ENABLE + FORCE and a policy that
admits only rows of the organization set for the current transaction. With nothing set the
policy matches no row: the wall fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

AUTH_ROLE = "assay_auth"
CURRENT_ORGANIZATION = "assay_current_organization()"
CURRENT_USER = "assay_current_user()"


def across_organizations(tables: Sequence[str], *statements: str) -> None:
    """Runs `statements` over every organization's rows of `tables`. FORCE ROW LEVEL SECURITY
    holds an owner that is a plain role (as in production) to the tenant policies too: it is
    lifted for these statements only, inside the migration's transaction, so no one else sees
    it lifted."""
    for table in tables:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    for statement in statements:
        op.execute(statement)
    for table in tables:
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def enable_rls(table: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


# The organization read once per statement (an init plan), not once per row: see migration
# 0018_policy_once_per_statement, which moved the policies made before it from the second form.
TENANT_CONDITION = f"organization_id = (SELECT {CURRENT_ORGANIZATION})"
PER_ROW_CONDITION = f"organization_id = {CURRENT_ORGANIZATION}"


def enable_tenant_rls(table: str) -> None:
    enable_rls(table)
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table}"
        f" USING ({TENANT_CONDITION}) WITH CHECK ({TENANT_CONDITION})"
    )


def allow_auth_lookup(table: str) -> None:
    """Let the credential lookups (functions owned by assay_auth) read this table; no one else."""
    op.execute(f"GRANT SELECT ON {table} TO {AUTH_ROLE}")
    op.execute(f"CREATE POLICY auth_lookup ON {table} FOR SELECT TO {AUTH_ROLE} USING (true)")
