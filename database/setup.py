"""Where the database is and getting it ready: embedded or configured, then migrated."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import make_url

from app.config import Settings, get_settings
from database import embedded
from database.migrate import MigrationOutcome, migrate


@dataclass(frozen=True)
class DatabaseUrls:
    runtime: str
    owner: str

    @property
    def runtime_role(self) -> str | None:
        return make_url(self.runtime).username


def _async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


async def resolve_urls(settings: Settings | None = None) -> DatabaseUrls:
    settings = settings or get_settings()
    if settings.database_url is None:
        server = await embedded.start_embedded(settings.data_dir)
        return DatabaseUrls(
            runtime=server.url(embedded.RUNTIME_ROLE), owner=server.url(embedded.OWNER_ROLE)
        )
    owner = settings.owner_database_url or settings.database_url
    return DatabaseUrls(runtime=_async_url(settings.database_url), owner=_async_url(owner))


async def prepare_database(
    settings: Settings | None = None,
) -> tuple[DatabaseUrls, MigrationOutcome | None]:
    settings = settings or get_settings()
    urls = await resolve_urls(settings)
    outcome = None
    if settings.migrate_on_start:
        outcome = await migrate(urls.owner, urls.runtime_role)
    return urls, outcome
