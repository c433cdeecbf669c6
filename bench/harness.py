"""A throw-away embedded database and the app wired to it, for benchmarks."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

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
        await close_sessions()
        await database.dispose()
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
    try:
        server = await embedded.start_embedded(data_dir / "db", cleanup_mode="delete")
        owner, runtime = server.url(embedded.OWNER_ROLE), server.url(embedded.RUNTIME_ROLE)
        await migrate(owner, embedded.RUNTIME_ROLE)
        yield data_dir, owner, runtime
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
