"""Rate limiting on the `limits` library's asyncio API (the engine under slowapi).

slowapi's decorator checks limits synchronously after the body is parsed; a dependency using
the async strategies runs first on the request path and never blocks the loop, with Redis too.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from utils.errors import RateLimited


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        uri = f"async+{redis_url}" if redis_url else "async+memory://"
        try:
            storage = storage_from_string(uri)
        except ConfigurationError as exc:  # the Redis client is an extra
            raise RuntimeError(
                "ASSAY_REDIS_URL needs the Redis client: install Assay with its redis extra"
                " (`uv sync --extra redis`, or `pip install 'assay[redis]'`)"
            ) from exc
        assert isinstance(storage, Storage), "an async+ storage URI gives an asyncio storage"
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._parsed: dict[str, RateLimitItem] = {}

    async def hit(self, scope: str, key: str, limit: str) -> None:
        """Count one request of `key` against `limit` (e.g. "10/minute"); 429 when over."""
        item = self._item(limit)
        if not await self._strategy.hit(item, scope, key):
            raise await self._limited(item, scope, key, limit)

    async def check(self, scope: str, key: str, limit: str) -> None:
        """429 when `key` has used up `limit`, without counting this request (for limits on
        failures: check first, `hit` once the attempt has failed)."""
        item = self._item(limit)
        if not await self._strategy.test(item, scope, key):
            raise await self._limited(item, scope, key, limit)

    def _item(self, limit: str) -> RateLimitItem:
        return self._parsed.get(limit) or self._parsed.setdefault(limit, parse(limit))

    async def _limited(self, item: RateLimitItem, scope: str, key: str, limit: str) -> RateLimited:
        reset_at, _remaining = await self._strategy.get_window_stats(item, scope, key)
        retry_after = max(1, math.ceil(reset_at - time.time()))
        return RateLimited(
            f"Too many requests; limit is {limit}. Retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def reset(self) -> None:
        await self._storage.reset()
