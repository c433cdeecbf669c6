"""What one process holds for its lifetime besides the database: set up by the process
bootstrap (app/bootstrap.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from utils.auth import PasswordHasher
from utils.config import Settings
from utils.ratelimit import RateLimiter
from utils.secrets import SecretBox


@dataclass
class Runtime:
    settings: Settings
    secret_key: str  # signs tokens, nothing else
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
            secret_box=make_secret_box(settings, secret_key),
            hasher=PasswordHasher(
                settings.bcrypt_rounds,
                settings.password_hash_threads,
                settings.password_hash_queue,
            ),
            rate_limiter=RateLimiter(settings.redis_url),
        )


def make_secret_box(settings: Settings, secret_key: str) -> SecretBox:
    """Stored secrets: under the encryption keys, and (for values stored before they existed)
    the key derived from the signing secret, last."""
    return SecretBox(settings.resolve_encryption_keys(), legacy_secret_key=secret_key)


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the runtime is not initialised (is the process bootstrap running?)")
    return _runtime
