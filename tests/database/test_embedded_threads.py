"""pgserver's inter-process lock is one object per process: threads of one process that use it
at once (a liveness check still running in a worker thread while the process lets the server
go) closed its file under each other, and the release failed with a TypeError, leaving the
server running. Checks from many threads at once now take turns, and the release after them
stops the server."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from database import embedded
from tests.e2e.servers import postmasters


async def test_checks_from_many_threads_and_a_release_take_turns(tmp_path: Path):
    server = await embedded.start_embedded(tmp_path / "db", cleanup_mode="stop")
    pgdata = server.handle.pgdata
    assert postmasters(pgdata)
    failures: list[BaseException] = []
    stop = threading.Event()

    def check() -> None:
        while not stop.is_set():
            try:
                server._ensure_running_blocking()
            except BaseException as error:  # reported below
                failures.append(error)
                return

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    await server.release()
    assert failures == []
    assert not postmasters(pgdata)
