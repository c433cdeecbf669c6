"""Command line: `python -m app serve` (API + workers), `python -m app worker` (workers only),
`python -m app migrate`, and `python -m app ready` (a container's healthcheck)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.request
from types import FrameType

import typer
import uvicorn
import uvloop

from app.bootstrap import running_process
from database.core import Database
from database.migrate import applied_revision, head_revision
from database.migrate import migrate as run_migrations
from database.setup import resolve_urls
from notifications.service import end_streams
from utils.config import get_settings
from utils.logging import configure_logging

cli = typer.Typer(add_completion=False, help="Assay: test and evaluate LLM applications.")
HEALTHCHECK_SECONDS = 4.0


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", envvar="ASSAY_HOST", help="Address to bind"),
    port: int = typer.Option(8000, envvar="PORT", help="Port to listen on"),
    forwarded_allow_ips: str = typer.Option(
        "",
        envvar="ASSAY_FORWARDED_ALLOW_IPS",
        help="Proxies trusted for X-Forwarded-For/Proto (comma-separated addresses, or *);"
        " none by default",
    ),
) -> None:
    """Start the database (embedded unless configured), migrate, and serve the API."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        log_config=None,
        access_log=False,  # our request log omits query strings (stream tokens travel there)
        timeout_graceful_shutdown=30,
    )
    _Server(config).run()


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn waits for open connections before the lifespan ends: live streams (which
        # last up to ASSAY_SSE_MAX_LIFETIME_SECONDS) must end first, or shutdown would wait.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon_threadsafe(end_streams)
        super().handle_exit(sig, frame)


@cli.command()
def worker() -> None:
    """Run jobs only (no HTTP), for run capacity apart from the API; stops on SIGTERM/SIGINT."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with running_process(settings, workers=max(1, settings.workers)):
            await stop.wait()

    uvloop.run(run())  # the loop uvicorn serves with


@cli.command()
def migrate() -> None:
    """Bring the database schema to the latest revision and exit."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        urls = await resolve_urls(settings)
        await run_migrations(urls.owner, urls.runtime_role)

    asyncio.run(run())


@cli.command()
def ready(
    port: int = typer.Option(8000, envvar="PORT", help="The API's port"),
    http: bool = typer.Option(
        True,
        "--http/--database",
        help="--http: ask this container's API (/health/ready); --database: check the"
        " database is reachable and migrated (a worker-only process serves no HTTP)",
    ),
) -> None:
    """Exit 0 when ready, 1 otherwise: the healthcheck of the container image."""
    if http:
        url = f"http://127.0.0.1:{port}/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=HEALTHCHECK_SECONDS) as answer:
                raise typer.Exit(0 if answer.status == 200 else 1)
        except OSError as exc:  # refused, timed out, or a 503 (HTTPError)
            typer.echo(f"not ready: {exc}", err=True)
            raise typer.Exit(1) from None
    settings = get_settings()
    if not settings.database_url:
        typer.echo("not ready: no ASSAY_DATABASE_URL to check", err=True)
        raise typer.Exit(1)

    async def migrated(url: str) -> bool:
        database = Database.connect(url, pool_size=1, max_overflow=0)
        try:
            async with asyncio.timeout(HEALTHCHECK_SECONDS):
                async with database.engine.connect() as connection:
                    return await applied_revision(connection) == head_revision()
        finally:
            await database.dispose()

    try:
        ok = asyncio.run(migrated(settings.database_url))
    except Exception as exc:  # any failure to reach the database is what this reports
        typer.echo(f"not ready: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()
