"""One process's life, shared by the API (`python -m app serve`) and a worker-only process
(`python -m app worker`): start, migrate, check the runtime role, build the notification parts
and the worker pool, and stop them in reverse order."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import structlog

from app.engine.jobs import HANDLERS, on_dead
from app.engine.maintenance import ensure_scheduled
from database.core import Database, set_database
from database.embedded import EmbeddedServer
from database.projects.webhooks import DELIVERY_JOB
from database.results import crud as results_crud
from database.results import events as run_events
from database.setup import check_runtime_role, prepare_database
from notifications.service import Notifications, set_notifications
from tasks.worker import WorkerPool
from utils import metrics, tracing
from utils.config import Settings
from utils.runtime import Runtime, set_runtime
from utils.transport import close_sessions

log = structlog.get_logger(__name__)
EMBEDDED_CHECK_SECONDS = 2.0
SWITCH_INTERVAL_SECONDS = 0.001


@asynccontextmanager
async def running_process(settings: Settings, *, workers: int) -> AsyncIterator[None]:
    """The process's database, runtime, notifications and (with `workers` > 0) worker pool,
    for the duration of the block."""
    # The event loop shares the interpreter lock with the template threads: each time it wakes
    # for I/O it may wait a whole switch interval for the lock, 5 ms by default. At 1 ms a
    # request that wakes it a few dozen times stays quick while renders run.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    metrics.configure(
        settings.metrics_directory,
        forget_siblings=settings.metrics_dir is None,  # ours: under data_dir, one per boot
    )
    configure_tracing(settings)
    runtime = Runtime.from_settings(settings)
    urls, _ = await prepare_database(settings)
    database = Database.connect(
        urls.runtime, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    tracing.instrument_engine(database.engine)
    try:
        await check_runtime_role(database)
        set_database(database)
        set_runtime(runtime)
        notifications = Notifications(
            database,
            urls.runtime,
            read_events=run_events.read_after,
            present_runs=results_crud.present_runs,
            stream_buffer=settings.sse_buffer_events,
            # A quarter of the pool at most for streams' replays, however many open at once.
            replay_reads=max(1, settings.db_pool_size // 4),
        )
        pool = (
            WorkerPool(
                database,
                HANDLERS,
                on_dead=on_dead,
                concurrency=workers,
                listener=notifications.listener,
                lease=timedelta(seconds=settings.job_lease_seconds),
                # A webhook attempt may wait its timeout on a receiver: half the workers at
                # most, so that deliveries never hold every run's chunks back.
                shares={DELIVERY_JOB: max(1, workers // 2)},
                per_organization={DELIVERY_JOB: settings.webhook_deliveries_per_organization},
            )
            if workers
            else None
        )
        await notifications.start()
        set_notifications(notifications)
        watch = (
            asyncio.create_task(_keep_running(urls.embedded), name="embedded-postgres")
            if urls.embedded is not None
            else None
        )
        # A full collection takes a fifth of a second: after start-up, not before it.
        tune = asyncio.get_running_loop().call_later(1.0, tune_garbage_collector)
        try:
            if pool is not None:
                await pool.start()
                # Only a process that runs jobs schedules the pruning: an API-only one never prunes.
                await ensure_scheduled(database, settings.maintenance_interval_seconds)
            log.info("assay started", embedded_database=settings.embedded, workers=workers)
            yield
        finally:
            tune.cancel()
            if watch is not None:
                # Its check may be running in a thread: let it end before the release below.
                watch.cancel()
                await asyncio.wait({watch})
            if pool is not None:
                await pool.stop(settings.worker_drain_seconds)
            set_notifications(None)
            await notifications.stop()
            await close_sessions()
            set_runtime(None)
    finally:
        set_database(None)
        await database.dispose()
        if urls.embedded is not None:
            await urls.embedded.release()  # the last process out stops the embedded server
        metrics.metrics().close()
        tracing.shutdown()
        log.info("assay stopped")


def configure_tracing(settings: Settings) -> None:
    """Once per process (the app, built first in an API process, may have done it)."""
    if tracing.provider() is None:
        tracing.configure(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)


async def _keep_running(server: EmbeddedServer) -> None:
    """The embedded PostgreSQL is this process's to keep: when its postmaster dies, start it
    again (at most once per check) and let the pools reconnect. /health says 503 meanwhile.
    A configured database is never restarted from here, only reconnected to."""
    while True:
        await asyncio.sleep(EMBEDDED_CHECK_SECONDS)
        try:
            if await server.ensure_running():
                log.warning("the embedded PostgreSQL had stopped: started it again")
        except Exception as exc:  # tried again at the next check
            log.error(
                "starting the embedded PostgreSQL again failed",
                error=str(exc),
                retry_in_seconds=EMBEDDED_CHECK_SECONDS,
            )


def tune_garbage_collector() -> None:
    """Called once start-up is done. Everything loaded so far (modules, the app, ORM mappers)
    lives as long as the process: freezing it spares every collection from walking it again.
    A run allocates many short-lived objects; collecting the young generation every 20,000
    allocations instead of 700 keeps collections from taking a visible share of the CPU
    (measured by `make bench`: about a third more cases per second)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
