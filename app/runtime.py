"""What one process holds for its lifetime besides the database: set up in the lifespan."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import timedelta

from app.config import Settings
from utils.auth import PasswordHasher
from utils.ratelimit import RateLimiter
from utils.secrets import SecretBox


@dataclass
class Runtime:
    settings: Settings
    secret_key: str
    hasher: PasswordHasher
    rate_limiter: RateLimiter
    secret_box: SecretBox

    @property
    def access_token_lifetime(self) -> timedelta:
        return timedelta(minutes=self.settings.access_token_minutes)

    @property
    def refresh_token_lifetime(self) -> timedelta:
        return timedelta(days=self.settings.refresh_token_days)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        secret_key = settings.resolve_secret_key()
        return cls(
            settings=settings,
            secret_key=secret_key,
            secret_box=SecretBox(secret_key),
            hasher=PasswordHasher(settings.bcrypt_rounds, settings.password_hash_threads),
            rate_limiter=RateLimiter(settings.redis_url),
        )


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the runtime is not initialised (is the app's lifespan running?)")
    return _runtime


def tune_garbage_collector() -> None:
    """Called once start-up is done. Everything loaded so far (modules, the app, ORM mappers)
    lives as long as the process: freezing it spares every collection from walking it again.
    A run allocates many short-lived objects; collecting the young generation every 20,000
    allocations instead of 700 keeps collections from taking a visible share of the CPU
    (measured by `make bench`: about a third more cases per second)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
