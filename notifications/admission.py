"""How many streams are open on this process, by organization: a stream is admitted while its
organization has room in its share of the process (else 429) and the process has room (else
503), each with Retry-After. One tenant cannot take every socket. (The database pool is
bounded apart: the hub's replay slots.)"""

from __future__ import annotations

import uuid
from collections import Counter

from utils.errors import RateLimited, Unavailable

RETRY_SECONDS = 30  # what a stream refused for want of room is told to wait


class OpenStreams:
    def __init__(self) -> None:
        self._open: Counter[uuid.UUID] = Counter()

    def admit(
        self, organization_id: uuid.UUID, *, per_organization: int | None, in_all: int | None
    ) -> None:
        """Counts a stream in, or refuses it (None: no bound)."""
        retry = {"Retry-After": str(RETRY_SECONDS)}
        if per_organization is not None and self._open[organization_id] >= per_organization:
            raise RateLimited(
                f"the organization has {per_organization} streams open on this server (its"
                " most): close one, or try again later",
                headers=retry,
            )
        if in_all is not None and self._open.total() >= in_all:
            raise Unavailable(
                f"this server has {in_all} streams open: try again later", headers=retry
            )
        self._open[organization_id] += 1

    def close(self, organization_id: uuid.UUID) -> None:
        self._open[organization_id] -= 1
        if self._open[organization_id] <= 0:
            del self._open[organization_id]

    def clear(self) -> None:
        self._open.clear()
