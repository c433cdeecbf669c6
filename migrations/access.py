"""Roles and grants that every migration run leaves in place.

`assay_app` is the group role holding the runtime's table privileges; the login role that the
service connects with (the user of ASSAY_DATABASE_URL) is made a member of it. Re-granting on
every run covers tables added by later migrations.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

APP_ROLE = "assay_app"
# Snapshots that history depends on: rows may be added (and go with their parent), never edited.
IMMUTABLE_TABLES = (
    "test_set_versions",
    "test_set_version_cases",
    "prompt_versions",
    "run_events",
)
# Records that are added and read, never changed or removed (triggers refuse it for every role
# too; the grant says so for the runtime).
APPEND_ONLY_TABLES = ("audit_log",)
# Accounts outlive their organizations: the runtime never deletes a user, so the keys naming
# one never act and need no index (tests/migrations/test_indexes.py).
KEPT_TABLES = ("users",)


def grant_runtime_access(connection: Connection, runtime_role: str | None) -> None:
    connection.execute(
        text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
    )
    connection.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"))
    # The runtime may read which revision is applied (for /health), never change it.
    connection.execute(text(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {APP_ROLE}"))
    for table in IMMUTABLE_TABLES:
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None:
            connection.execute(text(f"REVOKE UPDATE ON {table} FROM {APP_ROLE}"))
    for table in APPEND_ONLY_TABLES:
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None:
            connection.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {APP_ROLE}"))
    for table in KEPT_TABLES:
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None:
            connection.execute(text(f"REVOKE DELETE, TRUNCATE ON {table} FROM {APP_ROLE}"))
    if runtime_role is None:
        return
    owner = connection.execute(text("SELECT current_user")).scalar_one()
    if runtime_role == owner:
        return
    quoted = connection.dialect.identifier_preparer.quote(runtime_role)
    exists = connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": runtime_role}
    ).scalar()
    if not exists:
        connection.execute(text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS"))
    connection.execute(text(f"GRANT {APP_ROLE} TO {quoted}"))


def definer_role(role: str) -> str:
    """SQL making `role` (once) a no-login role that SECURITY DEFINER functions run as, and
    letting the migrating user grant to it and hand it functions."""
    return f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS;
          END IF;
          IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE format('GRANT {role} TO %I', current_user);
          END IF;
        END $$;
        """
