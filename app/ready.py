"""The container's healthcheck: `python -m app.ready --http` (this container's API answers
/health/ready) or `--database` (the database is reachable and migrated: a worker-only process
serves no HTTP). Exit 0 when ready, 1 otherwise.

It runs every 15 s inside a 5 s timeout, in a container that may be busy: it imports only what
its check needs (urllib; SQLAlchemy's engine, asyncpg and the settings), never the service (some
1,500 modules, seconds of CPU). `load_settings`, which every command uses, lives here for the
same reason.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from database.revisions import serves_revision

if TYPE_CHECKING:
    from pydantic import ValidationError

    from utils.config import Settings

HEALTHCHECK_SECONDS = 4.0
# Docker reserves a healthcheck's exit code 2: a check that cannot run is simply not ready.
NOT_READY = 1


def load_settings(exit_code: int = 2) -> Settings:
    """The service's settings; a rejected one ends the process with one line per error, naming
    its variable and the reason but never the value given (it may be a secret)."""
    from pydantic import ValidationError

    from utils.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        for line in settings_errors(exc):
            print(line, file=sys.stderr)
        raise SystemExit(exit_code) from None


def settings_errors(exc: ValidationError) -> list[str]:
    """`ASSAY_METRICS_TOKEN: at least 16 characters: ...`, one line per error."""
    from utils.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        first, *rest = error["loc"] or ("settings",)
        # A field read under an alias (PORT) reports the alias, which is the variable's name.
        name = f"{prefix}{first}" if first in Settings.model_fields else str(first)
        where = "".join(f" (item {part + 1})" if isinstance(part, int) else "" for part in rest)
        reason = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name.upper()}{where}: {reason}")
    return lines


def check_http(port: int) -> int:
    url = f"http://127.0.0.1:{port}/health/ready"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP_PROXY
    try:
        with direct.open(url, timeout=HEALTHCHECK_SECONDS) as answer:
            return 0 if answer.status == 200 else NOT_READY
    except OSError as exc:  # refused, timed out, or a 503 (HTTPError)
        print(f"not ready: {exc}", file=sys.stderr)
        return NOT_READY


def check_database(database_url: str | None) -> int:
    if not database_url:
        print("not ready: no ASSAY_DATABASE_URL to check", file=sys.stderr)
        return NOT_READY
    import asyncio

    try:
        applied = asyncio.run(_applied_revision(database_url))
    except Exception as exc:  # any failure to reach the database is what this reports
        print(f"not ready: {type(exc).__name__}", file=sys.stderr)
        return NOT_READY
    if serves_revision(applied):
        return 0
    print(f"not ready: the database is at revision {applied or 'none'}", file=sys.stderr)
    return NOT_READY


async def _applied_revision(database_url: str) -> str | None:
    """Connected as the service connects (its URL's options, `?ssl=require` say, read by
    SQLAlchemy's asyncpg dialect), through SQLAlchemy's asyncio engine, not the service."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from database.urls import async_url

    engine = create_async_engine(async_url(database_url), poolclass=NullPool)
    try:
        async with asyncio.timeout(HEALTHCHECK_SECONDS), engine.connect() as connection:
            if not await connection.scalar(
                text("SELECT to_regclass('alembic_version') IS NOT NULL")
            ):
                return None
            revision = await connection.scalar(
                text("SELECT version_num FROM alembic_version LIMIT 1")
            )
            return str(revision) if revision is not None else None
    finally:
        await engine.dispose()


def api_port(given: int | None) -> int:
    """--port, else PORT as `serve` reads it: the environment (the image sets it), else .env."""
    if given is not None:
        return given
    if os.environ.get("PORT", "").strip().isdigit():
        return int(os.environ["PORT"])
    return load_settings(NOT_READY).port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.ready",
        description="Exit 0 when ready, 1 otherwise: the healthcheck of the container image.",
    )
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--http",
        dest="http",
        action="store_true",
        default=True,
        help="ask this container's API (/health/ready); the default",
    )
    check.add_argument(
        "--database",
        dest="http",
        action="store_false",
        help="check the database is reachable and migrated (a worker-only process serves no HTTP)",
    )
    parser.add_argument("--port", type=int, help="the API's port (default: PORT, else 8000)")
    options = parser.parse_args(argv)
    if options.http:
        return check_http(api_port(options.port))
    return check_database(load_settings(NOT_READY).database_url)


if __name__ == "__main__":
    sys.exit(main())
