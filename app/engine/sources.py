"""A rescore's source results, read as its cases are taken rather than a chunk at once: a
chunk holds hundreds of cases and a stored output may be 10 MB, so reading them all first could
hold gigabytes. They are read a window at a time, in the order the cases are taken: at most
WINDOW_BYTES of their texts (and at least one result), each handed out once and dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

from app.engine.context import JobContext
from database.results.crud import rescore_sources
from database.results.models import Result

WINDOW_BYTES = 16 * 1024 * 1024

Key = tuple[int, int]  # (position, repetition)


def windows(order: Sequence[Key], sizes: Mapping[Key, int]) -> list[list[Key]]:
    """The keys in order, cut before a window's texts would pass WINDOW_BYTES."""
    found: list[list[Key]] = []
    held = 0
    for key in order:
        if not found or held + sizes[key] > WINDOW_BYTES:
            found.append([])
            held = 0
        found[-1].append(key)
        held += sizes[key]
    return found


class SourceResults:
    def __init__(
        self, ctx: JobContext, run_id: uuid.UUID, order: Sequence[Key], sizes: Mapping[Key, int]
    ) -> None:
        self._ctx, self._run_id = ctx, run_id
        self._windows = windows(order, sizes)
        self._read = 0  # windows read so far
        self._held: dict[Key, Result] = {}
        self._reading = asyncio.Lock()

    async def take(self, key: Key) -> Result:
        """The key's source result, read with its window (and any window before it not read
        yet) if it has not been."""
        if key in self._held:  # (no wait for another case's window)
            return self._held.pop(key)
        async with self._reading:
            while key not in self._held:
                if self._read == len(self._windows):
                    raise RuntimeError(f"the source result {key} of this rescore is gone")
                async with self._ctx.transaction() as session:
                    read = await rescore_sources.source_results(
                        session, self._run_id, self._windows[self._read]
                    )
                self._held |= read
                self._read += 1
            return self._held.pop(key)
