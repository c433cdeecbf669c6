"""A worker-only process: `python -m tasks` (no HTTP), for scaling runs apart from the API."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop

from app.config import get_settings
from app.main import check_runtime_role
from app.runtime import Runtime, set_runtime, tune_garbage_collector
from database.core import Database, set_database
from database.setup import prepare_database
from notifications.service import Notifications, set_notifications
from tasks.pool import start_workers
from utils.logging import configure_logging

log = structlog.get_logger("assay.worker")


async def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    runtime = Runtime.from_settings(settings)
    urls, _ = await prepare_database(settings)
    database = Database.connect(urls.runtime, pool_size=settings.db_pool_size)
    await check_runtime_role(database)
    set_database(database)
    set_runtime(runtime)
    notifications = Notifications(database, urls.runtime)
    pool = start_workers(
        settings.model_copy(update={"workers": max(1, settings.workers)}),
        database,
        notifications.listener,
    )
    assert pool is not None
    await notifications.start()
    set_notifications(notifications)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await pool.start()
    tune_garbage_collector()
    await stop.wait()
    await pool.stop(settings.worker_drain_seconds)
    set_notifications(None)
    await notifications.stop()
    await database.dispose()


if __name__ == "__main__":
    uvloop.run(main())  # the loop uvicorn serves with
