"""A throw-away embedded database and the app wired to it, for benchmarks."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from app.bootstrap import tune_garbage_collector
from app.engine.jobs import HANDLERS, on_dead
from app.main import create_app
from database import embedded
from database.core import Database, get_database, set_database
from database.migrate import migrate
from tasks.worker import WorkerPool
from utils.config import Settings
from utils.runtime import Runtime, set_runtime
from utils.transport import close_sessions


@asynccontextmanager
async def bench_app(**overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    data_dir = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    os.environ["ASSAY_DATA_DIR"] = str(data_dir)
    settings = Settings(data_dir=data_dir, log_level="WARNING", **overrides)  # type: ignore[arg-type]
    server = await embedded.start_embedded(data_dir / "db", cleanup_mode="delete")
    await migrate(server.url(embedded.OWNER_ROLE), embedded.RUNTIME_ROLE)
    database = Database.connect(server.url(embedded.RUNTIME_ROLE))
    set_database(database)
    set_runtime(Runtime.from_settings(settings))
    transport = httpx.ASGITransport(app=create_app(settings))
    tune_garbage_collector()  # as the lifespan does once a server has started
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield client
    finally:
        try:
            await close_sessions()
            await database.dispose()
            await server.release()  # before its directory goes, as in bench_database
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


@asynccontextmanager
async def run_workers() -> AsyncIterator[None]:
    """Two workers in this process, on the benchmark's database, as a server would run."""
    pool = WorkerPool(
        get_database(),
        HANDLERS,
        on_dead=on_dead,
        concurrency=2,
        listen_url=str(get_database().engine.url.render_as_string(hide_password=False)),
        lease=timedelta(seconds=30),
    )
    await pool.start()
    try:
        yield
    finally:
        await pool.stop()


@asynccontextmanager
async def bench_database() -> AsyncIterator[tuple[Path, str, str]]:
    """A throw-away embedded database, migrated: (data dir, owner URL, runtime URL), for a
    server started in another process (external database mode)."""
    data_dir = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    server: embedded.EmbeddedServer | None = None
    try:
        server = await embedded.start_embedded(data_dir / "db", cleanup_mode="delete")
        owner, runtime = server.url(embedded.OWNER_ROLE), server.url(embedded.RUNTIME_ROLE)
        await migrate(owner, embedded.RUNTIME_ROLE)
        yield data_dir, owner, runtime
    finally:
        # Stopped before its directory goes: pgserver's exit hook, finding no directory,
        # could leave the postmaster running.
        try:
            if server is not None:
                await server.release()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


async def rate(count: int, call: Callable[[], Awaitable[object]]) -> float:
    """Calls per second over `count` sequential calls (after a short warm-up)."""
    for _ in range(min(20, count)):
        await call()
    started = time.perf_counter()
    for _ in range(count):
        await call()
    return count / (time.perf_counter() - started)


class StolenTime:
    """The share of the machine's CPU time the hypervisor took for other guests (the `steal`
    column of /proc/stat) while measuring: on a shared virtual machine, the figures only mean
    what they say when it is low. None where /proc/stat is not available."""

    def __init__(self) -> None:
        self.stolen = 0
        self.total = 0

    @staticmethod
    def _sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(value) for value in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return fields[7], sum(fields)

    @contextmanager
    def measure(self) -> Iterator[None]:
        before = self._sample()
        try:
            yield
        finally:
            after = self._sample()
            if before is not None and after is not None:
                self.stolen += after[0] - before[0]
                self.total += after[1] - before[1]

    @property
    def share(self) -> float | None:
        return self.stolen / self.total if self.total else None


async def wait_healthy(process: asyncio.subprocess.Process, base_url: str, log_path: Path) -> None:
    """Until the server started as `process` answers /health with 200 (or gives up, with its
    log)."""
    async with httpx.AsyncClient() as client:
        for _ in range(1200):  # imports take a while without bytecode caches
            if process.returncode is not None:
                raise RuntimeError(f"server exited: {await asyncio.to_thread(log_path.read_text)}")
            try:
                if (await client.get(f"{base_url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server not healthy: {await asyncio.to_thread(log_path.read_text)}")


async def api_post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST `body` to the API's `path` (under /api/v1), which must succeed; its JSON answer."""
    response = await client.post(f"/api/v1{path}", json=body)
    assert response.status_code in (200, 201, 202), (path, response.text)
    return dict(response.json())


def cases_csv(rows: int) -> bytes:
    """A test set of `rows` cases as a CSV import file."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["input", "expected_output", "topic", "tags"])
    for i in range(rows):
        writer.writerow([f"Case {i}: what is {i} + {i}?", str(2 * i), f"topic {i % 50}", "bench"])
    return buffer.getvalue().encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def serve_env(data_dir: Path, owner: str, runtime: str, **settings: str) -> dict[str, str]:
    """The environment of `python -m app serve` on a bench database (none of the caller's own
    ASSAY_ settings): API only unless `settings` say otherwise (ASSAY_WORKERS=...)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env.update(
        ASSAY_DATA_DIR=str(data_dir),
        ASSAY_DATABASE_URL=runtime,
        ASSAY_MIGRATION_DATABASE_URL=owner,
        ASSAY_MIGRATE_ON_START="false",
        ASSAY_SECRET_KEY=secrets.token_urlsafe(48),
        ASSAY_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        ASSAY_WORKERS="0",
        ASSAY_BCRYPT_ROUNDS="4",
        ASSAY_LOG_LEVEL="WARNING",
        ASSAY_LOG_FORMAT="json",
    )
    env.update(settings)
    return env


def engine_settings(concurrency: int) -> dict[str, str]:
    """serve_assay's settings for a server that runs runs: two workers, runs of up to
    `concurrency`, providers on this machine (the fakes) allowed."""
    return {
        "ASSAY_WORKERS": "2",
        "ASSAY_MAX_RUN_CONCURRENCY": str(concurrency),
        "ASSAY_ALLOW_PRIVATE_NETWORKS": "true",
    }


@asynccontextmanager
async def serve_assay(
    data_dir: Path, owner: str, runtime: str, **settings: str
) -> AsyncIterator[tuple[int, str]]:
    """(pid, base URL) of `python -m app serve` in a process of its own on the given database,
    healthy; `settings` are ASSAY_ variables (see serve_env)."""
    port = free_port()
    log_path = data_dir / f"server-{port}.log"
    with open(log_path, "w") as log:  # noqa: ASYNC230 (before the server starts)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "app", "serve", "--port", str(port)),
            env=serve_env(data_dir, owner, runtime, **settings),
            stdout=log,
            stderr=log,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(process, base_url, log_path)
        yield process.pid, base_url
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)
