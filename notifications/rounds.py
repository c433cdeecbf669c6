"""Work the hub's clock starts now and then (a check of the open streams), one round at a
time: a round is due `interval` seconds after the last one began, and none starts while one
is still going."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Rounds:
    def __init__(self) -> None:
        self._next_round = 0.0
        self._round: asyncio.Task[None] | None = None

    def due(self, now: float) -> bool:
        return now >= self._next_round and (self._round is None or self._round.done())

    def start(
        self, work: Coroutine[Any, Any, None], now: float, interval: float, name: str
    ) -> asyncio.Task[None]:
        self._next_round = now + interval
        self._round = asyncio.create_task(work, name=name)
        return self._round

    async def stop(self) -> None:
        if self._round is not None:
            self._round.cancel()
            await asyncio.gather(self._round, return_exceptions=True)
            self._round = None
