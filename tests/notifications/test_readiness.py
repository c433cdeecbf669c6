"""Readiness of a process that has everything running (the live fixture: its LISTEN
connection, its hub and a worker pool), and of one whose workers have died."""

from __future__ import annotations

import asyncio

from database.revisions import head_revision
from tasks.worker import started_pools


async def test_ready_with_its_listener_and_workers_and_not_once_they_die(live):
    assert live.notifications is not None
    await asyncio.wait_for(live.notifications.listener.connected.wait(), 10)
    ready = await live.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ok",
        "database": "ok",
        "migration_revision": head_revision(),
        "migration_head": head_revision(),
        "listener": "connected",
        "workers": "running",
    }

    (pool,) = started_pools()
    daemon = pool._daemons[0]  # the claim loop, gone as if it had crashed
    daemon.cancel()
    await asyncio.gather(daemon, return_exceptions=True)
    stopped = await live.client.get("/health/ready")
    assert stopped.status_code == 503
    assert stopped.json()["workers"] == "stopped"
    assert (await live.client.get("/health/live")).status_code == 200
