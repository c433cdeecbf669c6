"""The process's one LISTEN connection, shared by the worker pool and the event hub.

Callbacks run on the event loop and must not block. After every (re)connect the reconnect
callbacks run, so that each user catches up on what it may have missed while away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from database.core import asyncpg_connect_args

log = structlog.get_logger(__name__)

RECONNECT_SECONDS = 1.0
CHECK_SECONDS = 15.0


class Listener:
    def __init__(self, url: str, *, reconnect_seconds: float | None = None) -> None:
        self.url = url
        self.reconnect_seconds = reconnect_seconds or RECONNECT_SECONDS
        self._channels: dict[str, list[Callable[[str], None]]] = {}
        self._reconnected: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        self.connected = asyncio.Event()

    def on(self, channel: str, callback: Callable[[str], None]) -> None:
        """Calls `callback(payload)` for every NOTIFY on `channel` (register before start)."""
        self._channels.setdefault(channel, []).append(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnected.append(callback)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Returns when the connection is lost. A silently dropped TCP connection never says
        so: a query every `CHECK_SECONDS` finds out."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_SECONDS):
                    await lost.wait()
                    return
            await connection.fetchval("SELECT 1", timeout=CHECK_SECONDS)

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in self._channels.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("notification callback failed", channel=channel)

    async def _run(self) -> None:
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(**asyncpg_connect_args(self.url))
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in self._channels:
                    await connection.add_listener(
                        channel, lambda _c, _pid, channel, payload: self._dispatch(channel, payload)
                    )
                self.connected.set()
                for callback in self._reconnected:
                    try:
                        callback()
                    except Exception:
                        log.exception("reconnect callback failed")
                await self._watch(connection, lost)
            except Exception as exc:  # whatever broke, reconnect: the process depends on it
                log.warning("notification listener disconnected", error=str(exc))
            finally:
                self.connected.clear()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=2))
            await asyncio.sleep(self.reconnect_seconds)
