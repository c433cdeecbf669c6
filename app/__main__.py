"""Command line: `python -m app serve` (API + workers), `python -m app worker` (workers only),
`python -m app migrate`, `python -m app reencrypt-secrets` (after a new encryption key), and
`python -m app ready` (a container's healthcheck; the image runs `python -m app.ready`, which
imports none of the service)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

import typer
import uvicorn
import uvloop
from sqlalchemy import LargeBinary, bindparam, column, select, table, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.bootstrap import running_process
from app.http_protocol import BoundedHttpToolsProtocol
from app.ready import load_settings
from app.ready import main as check_ready
from database.core import make_engine
from database.migrate import migrate as run_migrations
from database.setup import resolve_urls
from notifications.service import end_streams
from utils.config import InsecureSecretKey, InvalidEncryptionKeys
from utils.logging import configure_logging
from utils.runtime import make_secret_box
from utils.secrets import SecretBox, SecretUnreadable

cli = typer.Typer(add_completion=False, help="Assay: test and evaluate LLM applications.")


@cli.command()
def serve(
    host: str | None = typer.Option(
        None, help="Address to bind [default: ASSAY_HOST, else 127.0.0.1]"
    ),
    port: int | None = typer.Option(None, help="Port to listen on [default: PORT, else 8000]"),
    forwarded_allow_ips: str | None = typer.Option(
        None,
        help="Proxies trusted for X-Forwarded-For/Proto (comma-separated addresses, or *)"
        " [default: ASSAY_FORWARDED_ALLOW_IPS, else none]",
    ),
) -> None:
    """Start the database (embedded unless configured), migrate, and serve the API."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    raise_open_files_limit()
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        proxy_headers=True,
        forwarded_allow_ips=(
            settings.forwarded_allow_ips if forwarded_allow_ips is None else forwarded_allow_ips
        ),
        log_config=None,
        access_log=False,  # our request log omits query strings (stream tokens travel there)
        timeout_graceful_shutdown=30,
        http=BoundedHttpToolsProtocol,
    )
    _Server(config).run()


def raise_open_files_limit() -> None:
    """Every live stream holds a socket: the soft limit on open files (often 1,024) is raised
    to the hard one, which the operator sets (`ulimit -n`, the container's `nofile`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # a platform's ceiling below `hard`
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


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
    settings = load_settings()
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
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        urls = await resolve_urls(settings)
        await run_migrations(urls.owner, urls.runtime_role)

    asyncio.run(run())


# Every column holding a value sealed by the runtime's SecretBox, as (table, column), rows
# keyed by `id`: a new encrypted column is one more line here.
ENCRYPTED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model_configs", "api_key_encrypted"),
    ("model_configs", "http_headers_encrypted"),
    ("webhooks", "secret_encrypted"),
    ("webhooks", "previous_secret_encrypted"),
)


@cli.command("reencrypt-secrets")
def reencrypt_secrets() -> None:
    """Encrypt every stored secret again with the newest of ASSAY_ENCRYPTION_KEYS, across all
    organizations, in one transaction. Run it once every process holds the new key list:
    afterwards the older keys, and ASSAY_SECRET_KEY, open nothing stored."""
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        box = make_secret_box(settings, settings.resolve_secret_key())
    except (InsecureSecretKey, InvalidEncryptionKeys) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None

    async def run() -> Reencryption:
        urls = await resolve_urls(settings)  # the owner: row-level security hides tenants
        engine = make_engine(urls.owner, pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as connection:
                return await reencrypt_columns(connection, box)
        finally:
            await engine.dispose()
            if urls.embedded is not None:
                await urls.embedded.release()

    try:
        outcome = asyncio.run(run())
    except NotTheOwner as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"re-encrypted {outcome.rewritten} stored secrets with the newest key"
        f" ({outcome.current} already were)"
    )
    if outcome.unreadable:
        typer.echo(
            f"{len(outcome.unreadable)} stored secrets open with none of the keys and were left"
            " as they are; enter them again: " + ", ".join(outcome.unreadable),
            err=True,
        )
        raise typer.Exit(1)


class NotTheOwner(RuntimeError):
    """The connection's role cannot see past row-level security."""


@dataclass
class Reencryption:
    rewritten: int = 0
    current: int = 0  # already under the newest key
    unreadable: list[str] = field(default_factory=list)  # "table.column row-id"


async def reencrypt_columns(
    connection: AsyncConnection,
    box: SecretBox,
    columns: Sequence[tuple[str, str]] = ENCRYPTED_COLUMNS,
) -> Reencryption:
    """Rewrites each value of `columns` not yet under the newest key, in the connection's
    transaction (the caller commits): a second pass rewrites nothing."""
    outcome = Reencryption()
    async with _every_organization(connection, sorted({name for name, _ in columns})):
        for table_name, column_name in columns:
            await _reencrypt_column(connection, box, table_name, column_name, outcome)
    return outcome


@contextlib.asynccontextmanager
async def _every_organization(
    connection: AsyncConnection, tables: Sequence[str]
) -> AsyncIterator[None]:
    """FORCE ROW LEVEL SECURITY holds the tables' owner to the tenant policies too: lifted for
    this transaction (its owner may), unless the role bypasses them anyway. On an error the
    rollback puts it back."""
    bypasses = await connection.scalar(
        text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    )
    forced: Sequence[str] = []
    if not bypasses:
        found = await connection.execute(
            text(
                "SELECT relname, pg_has_role(current_user, relowner, 'USAGE') FROM pg_class"
                " WHERE oid = ANY(CAST(:tables AS regclass[])) AND relforcerowsecurity"
            ),
            {"tables": list(tables)},
        )
        rows = found.all()
        if not all(owned for _, owned in rows):
            raise NotTheOwner(
                "re-encrypting needs the database owner, as migrating does: set"
                " ASSAY_MIGRATION_DATABASE_URL (the runtime role sees one organization at a time)"
            )
        forced = [name for name, _ in rows]
    quote = connection.dialect.identifier_preparer.quote
    for name in forced:
        await connection.execute(text(f"ALTER TABLE {quote(name)} NO FORCE ROW LEVEL SECURITY"))
    yield
    for name in forced:
        await connection.execute(text(f"ALTER TABLE {quote(name)} FORCE ROW LEVEL SECURITY"))


async def _reencrypt_column(
    connection: AsyncConnection,
    box: SecretBox,
    table_name: str,
    column_name: str,
    outcome: Reencryption,
) -> None:
    rows = table(table_name, column("id"), column(column_name, LargeBinary))
    values = rows.c[column_name]
    stored = await connection.execute(
        select(rows.c.id, values).where(values.is_not(None)).order_by(rows.c.id).with_for_update()
    )
    rewrites = []
    for row_id, token in stored.all():
        try:
            rewritten = box.reencrypt(bytes(token))
        except SecretUnreadable:
            outcome.unreadable.append(f"{table_name}.{column_name} {row_id}")
            continue
        if rewritten is None:
            outcome.current += 1
        else:
            rewrites.append({"row_id": row_id, "token": rewritten})
    if rewrites:
        await connection.execute(
            update(rows)
            .where(rows.c.id == bindparam("row_id"))
            .values({values: bindparam("token")}),
            rewrites,
        )
    outcome.rewritten += len(rewrites)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ready(context: typer.Context) -> None:
    """Exit 0 when ready, 1 otherwise: the healthcheck of the container image (--http, the
    default, asks this container's API; --database checks the database is reachable and
    migrated; --port N). The same as `python -m app.ready`, which starts far faster."""
    raise typer.Exit(check_ready(context.args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()
