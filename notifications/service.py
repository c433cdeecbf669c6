"""The process's notification parts, started and stopped together by the process bootstrap."""

from __future__ import annotations

from database.core import Database
from notifications.gone_runs import RunsPresent
from notifications.hub import BUFFER, REPLAY_READS, EventReader, Hub
from notifications.listener import Listener
from notifications.publisher import Publisher, install_publisher
from notifications.subscriber import SHUTDOWN


class Notifications:
    """One LISTEN connection (shared with the worker pool), the publisher of this process's
    commits, and the hub of its stream subscribers."""

    def __init__(
        self,
        database: Database,
        listen_url: str,
        *,
        read_events: EventReader,
        present_runs: RunsPresent | None = None,
        stream_buffer: int = BUFFER,
        replay_reads: int = REPLAY_READS,
    ) -> None:
        self.listener = Listener(listen_url)
        self.publisher = Publisher(database)
        self.hub = Hub(
            database,
            self.listener,
            read_events=read_events,
            present_runs=present_runs,
            buffer=stream_buffer,
            replay_reads=replay_reads,
        )

    async def start(self) -> None:
        """Call once every user of the listener has registered its channels."""
        install_publisher(self.publisher.runs_changed)
        await self.publisher.start()
        await self.hub.start()
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        await self.hub.stop()
        install_publisher(None)
        await self.publisher.stop()


_current: Notifications | None = None


def set_notifications(notifications: Notifications | None) -> None:
    global _current
    _current = notifications


def get_notifications() -> Notifications:
    if _current is None:
        raise RuntimeError("notifications are not started in this process")
    return _current


def current_publisher() -> Publisher | None:
    return _current.publisher if _current is not None else None


def end_streams() -> None:
    """The server is stopping: end the open streams now (their clients reconnect elsewhere)
    rather than hold the shutdown until each stream's lifetime runs out."""
    if _current is not None:
        _current.hub.end_all(SHUTDOWN)
