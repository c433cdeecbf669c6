"""Turns taken one at a time for each key (an organization, say), a key's waiters in the order
they came. A key's lock lives only while its turn is held or waited for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Turns(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, asyncio.Lock] = {}
        self._takers: dict[K, int] = {}  # holding or waiting for the key's turn

    @contextlib.asynccontextmanager
    async def turn(self, key: K) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._takers[key] = self._takers.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._takers[key] -= 1
            if not self._takers[key]:
                del self._takers[key], self._locks[key]
