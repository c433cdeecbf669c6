"""The database URL as the service connects with it, importing only SQLAlchemy's URL handling
(the container's healthcheck reads it too: app/ready.py)."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def async_url(url: str) -> str:
    """The URL for asyncpg, whichever PostgreSQL driver it names (compose names none)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)
