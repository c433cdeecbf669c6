"""Schema migrations, run at start-up and by `make migrate`, under an advisory lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Any constant shared by all processes: concurrent starts queue on it and migrate once.
MIGRATION_LOCK_KEY = 7_415_889_301

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MigrationOutcome:
    before: str | None
    after: str | None

    @property
    def applied(self) -> bool:
        return self.before != self.after


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection, runtime_role: str | None, revision: str) -> MigrationOutcome:
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    before = current_revision(connection)
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["runtime_role"] = runtime_role
    command.upgrade(config, revision)
    return MigrationOutcome(before=before, after=current_revision(connection))


async def migrate(
    owner_url: str, runtime_role: str | None, *, revision: str = "head"
) -> MigrationOutcome:
    """Bring the schema to `revision` (the latest by default) in one transaction and give the
    runtime role its access."""
    engine = create_async_engine(owner_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            outcome = await connection.run_sync(_upgrade, runtime_role, revision)
    finally:
        await engine.dispose()
    if outcome.applied:
        log.info("migrations applied", before=outcome.before, after=outcome.after)
    else:
        log.info("database schema is current", revision=outcome.after)
    return outcome


async def applied_revision(connection: AsyncConnection) -> str | None:
    """The applied revision, read with one plain query (cheap enough for every health check)."""
    exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists:
        return None
    return await connection.scalar(text("SELECT version_num FROM alembic_version LIMIT 1"))


@dataclass(frozen=True)
class RoleRights:
    name: str
    superuser: bool
    bypass_rls: bool
    # Tables it owns, or may act as the owner of (a member of the owner's role): an owner may
    # turn their row-level security off.
    owned_tables: int
    # Roles that SECURITY DEFINER functions run as, which this one is a member of: their
    # policies (`USING (true)` across tenants, for the queue, retention, metrics and logins)
    # would apply to it too.
    definer_roles: tuple[str, ...] = ()
    # Superuser or BYPASSRLS roles this one may SET ROLE to: it is one of them when it likes.
    unsafe_roles: tuple[str, ...] = ()


async def runtime_role_rights(connection: AsyncConnection) -> RoleRights:
    """What the connected role may do that would let it past row-level security."""
    row = (
        await connection.execute(
            text(
                "SELECT r.rolname, r.rolsuper, r.rolbypassrls,"
                " (SELECT count(*) FROM pg_tables t WHERE t.schemaname = 'public'"
                "   AND pg_has_role(current_user, t.tableowner, 'MEMBER')),"
                " ARRAY(SELECT DISTINCT o.rolname FROM pg_proc p"
                "   JOIN pg_roles o ON o.oid = p.proowner"
                "   WHERE p.prosecdef AND o.rolname <> current_user"
                "   AND pg_has_role(current_user, o.oid, 'MEMBER') ORDER BY o.rolname),"
                " ARRAY(SELECT s.rolname FROM pg_roles s"
                "   WHERE (s.rolsuper OR s.rolbypassrls) AND s.rolname <> current_user"
                "   AND pg_has_role(current_user, s.oid, 'MEMBER') ORDER BY s.rolname)"
                " FROM pg_roles r WHERE r.rolname = current_user"
            )
        )
    ).one()
    return RoleRights(
        name=row[0],
        superuser=row[1],
        bypass_rls=row[2],
        owned_tables=row[3],
        definer_roles=tuple(row[4]),
        unsafe_roles=tuple(row[5]),
    )
