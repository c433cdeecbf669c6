"""Where the database is and getting it ready: embedded or configured, migrated, and connected
to as a role that row-level security applies to."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy.engine import make_url

from database import embedded
from database.core import Database
from database.migrate import MigrationOutcome, RoleRights, migrate, runtime_role_rights
from database.urls import async_url
from utils.config import Settings, get_settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DatabaseUrls:
    runtime: str
    owner: str
    embedded: embedded.EmbeddedServer | None = None  # to let go of when the process stops

    @property
    def runtime_role(self) -> str | None:
        return make_url(self.runtime).username


async def resolve_urls(settings: Settings | None = None) -> DatabaseUrls:
    settings = settings or get_settings()
    if settings.database_url is None:
        server = await embedded.start_embedded(settings.data_dir)
        return DatabaseUrls(
            runtime=server.url(embedded.RUNTIME_ROLE),
            owner=server.url(embedded.OWNER_ROLE),
            embedded=server,
        )
    owner = settings.owner_database_url or settings.database_url
    return DatabaseUrls(runtime=async_url(settings.database_url), owner=async_url(owner))


async def prepare_database(
    settings: Settings | None = None,
) -> tuple[DatabaseUrls, MigrationOutcome | None]:
    settings = settings or get_settings()
    urls = await resolve_urls(settings)
    outcome = None
    if settings.migrate_on_start:
        outcome = await migrate(urls.owner, urls.runtime_role)
    return urls, outcome


class UnsafeDatabaseRole(RuntimeError):
    """The runtime role could read past row-level security; refusing to serve."""


async def check_runtime_role(database: Database) -> None:
    async with database.engine.connect() as connection:
        refuse_unsafe(await runtime_role_rights(connection))


def refuse_unsafe(rights: RoleRights) -> None:
    """Raises when the runtime role could read past row-level security."""
    if rights.superuser or rights.bypass_rls:
        raise UnsafeDatabaseRole(
            f"ASSAY_DATABASE_URL connects as {rights.name!r}, which is a superuser or has "
            "BYPASSRLS: row-level security would not apply. Use a plain role and put the owner "
            "in ASSAY_MIGRATION_DATABASE_URL."
        )
    if rights.definer_roles:
        raise UnsafeDatabaseRole(
            f"ASSAY_DATABASE_URL connects as {rights.name!r}, a member of "
            f"{', '.join(rights.definer_roles)}: the cross-organization policies of those roles "
            "would apply to it. Use a plain runtime role (not the migration owner) and put the "
            "owner in ASSAY_MIGRATION_DATABASE_URL."
        )
    if rights.unsafe_roles:
        raise UnsafeDatabaseRole(
            f"ASSAY_DATABASE_URL connects as {rights.name!r}, a member of "
            f"{', '.join(rights.unsafe_roles)}, a superuser or BYPASSRLS role it may act as: "
            "row-level security would not hold. Use a plain role and put the owner in "
            "ASSAY_MIGRATION_DATABASE_URL."
        )
    if rights.owned_tables:
        raise UnsafeDatabaseRole(
            f"ASSAY_DATABASE_URL connects as {rights.name!r}, which owns (or may act as the "
            f"owner of) {rights.owned_tables} of the tables: an owner may turn their row-level "
            "security off. Use a plain role and put the owner in ASSAY_MIGRATION_DATABASE_URL."
        )
