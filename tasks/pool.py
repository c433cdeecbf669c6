"""Building the process's worker pool from the settings."""

from __future__ import annotations

from datetime import timedelta

from app.config import Settings
from database.core import Database
from notifications.listener import Listener
from tasks.handlers import HANDLERS, on_dead
from tasks.worker import WorkerPool


def start_workers(settings: Settings, database: Database, listener: Listener) -> WorkerPool | None:
    """The pool this process runs (not yet started), or None for an API-only process."""
    if settings.workers == 0:
        return None
    return WorkerPool(
        database,
        HANDLERS,
        on_dead=on_dead,
        concurrency=settings.workers,
        listener=listener,
        lease=timedelta(seconds=settings.job_lease_seconds),
    )
