"""Rate limiting on the `limits` library's asyncio API (the engine under slowapi).

slowapi's decorator checks limits synchronously after the body is parsed; a dependency using
the async strategies runs first on the request path and never blocks the loop, with Redis too.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from utils.errors import RateLimited

# Reservations count in plain counters, apart from the moving windows of `hit`.
RESERVATION_NAMESPACE = "reserved"


@dataclass(frozen=True)
class Quota:
    """One budget an attempt draws on: `key` may make `limit` (e.g. "10/hour") attempts of
    the kind `scope` names."""

    scope: str
    key: str
    limit: str


class Reservation:
    """Slots taken before an attempt; `release` gives them back when the attempt turns out
    not to count."""

    def __init__(self, storage: Storage, counters: Sequence[tuple[str, int]]) -> None:
        self._storage = storage
        self._counters = list(counters)

    async def release(self) -> None:
        counters, self._counters = self._counters, []
        for counter, expiry in counters:
            await _give_back(self._storage, counter, expiry)


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

    async def reserve(self, *quotas: Quota) -> Reservation:
        """Take a slot of every quota before the attempt they limit, 429 when one has none
        left (taking none then). Each slot is taken with one atomic increment (in memory or in
        Redis), so concurrent attempts cannot all pass before any is counted, as they could
        with a check before the attempt and a count after it. A quota's window is fixed: it
        starts at the first slot taken and lasts the limit's period."""
        taken: list[tuple[str, int]] = []
        for quota in quotas:
            item = self._item(quota.limit)
            counter = item.key_for(RESERVATION_NAMESPACE, quota.scope, quota.key)
            expiry = item.get_expiry()
            used = await self._storage.incr(counter, expiry)
            taken.append((counter, expiry))
            if used > item.amount:
                await Reservation(self._storage, taken).release()
                retry_after = await self._storage.get_expiry(counter) - time.time()
                raise _rate_limited(quota.limit, retry_after)
        return Reservation(self._storage, taken)

    def _item(self, limit: str) -> RateLimitItem:
        return self._parsed.get(limit) or self._parsed.setdefault(limit, parse(limit))

    async def _limited(self, item: RateLimitItem, scope: str, key: str, limit: str) -> RateLimited:
        reset_at, _remaining = await self._strategy.get_window_stats(item, scope, key)
        return _rate_limited(limit, reset_at - time.time())

    async def reset(self) -> None:
        await self._storage.reset()


async def _give_back(storage: Storage, counter: str, expiry: int) -> None:
    if await storage.incr(counter, expiry, amount=-1) < 0:
        # The window ended while the attempt ran: a negative count would be a free slot.
        await storage.incr(counter, expiry)


def _rate_limited(limit: str, seconds_left: float) -> RateLimited:
    retry_after = max(1, math.ceil(seconds_left))
    return RateLimited(
        f"Too many requests; limit is {limit}. Retry in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    )


def client_network(address: str | None) -> str:
    """Where a client's requests (or failures) are counted from: an IPv4 address, or an IPv6
    address's /64 (one host commonly holds a whole /64, and could otherwise come from as many
    addresses as it likes)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client, as a dual-stack listener shows it
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
