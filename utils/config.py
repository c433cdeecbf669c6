"""One Settings object for the whole service, read from the environment (prefix ASSAY_)."""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import limits
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "placeholder", "dev"})
MIN_SECRET_LENGTH = 32
# A Fernet key: 32 bytes in url-safe base64, 44 characters of which the last is "=".
ENCRYPTION_KEY_BYTES = 32
ENCRYPTION_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}=")
GENERATE_ENCRYPTION_KEY = (
    "python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
)


class InsecureSecretKey(RuntimeError):
    """Raised at start when a production deployment has no real secret key."""


class InvalidEncryptionKeys(RuntimeError):
    """Raised at start when ASSAY_ENCRYPTION_KEYS is missing in production or malformed."""


# A process's connection pool keeps every connection it opens: keep the overflow at 0 and raise
# the size instead. SQLAlchemy closes an overflow connection as it comes back to a pool already
# holding its size in idle connections, and the next burst of requests pays for a new
# PostgreSQL backend (a fork, the driver's type introspection, every statement prepared again);
# bench/request_path.py shows what that costs a read. 20 is the former 10 + 10 on overflow.
DEFAULT_DB_POOL_SIZE = 20
DEFAULT_DB_MAX_OVERFLOW = 0


MOST_RETENTION_DAYS = 36_500


_WEEK_SECONDS = 7 * 24 * 3600
DEFAULT_PORT = 8000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSAY_", env_file=".env", extra="ignore")

    # Database. With no database_url, an embedded PostgreSQL is started under data_dir.
    database_url: str | None = None
    migration_database_url: str | None = None
    data_dir: Path = Path(".assay")
    db_pool_size: int = Field(default=DEFAULT_DB_POOL_SIZE, ge=1)
    db_max_overflow: int = Field(default=DEFAULT_DB_MAX_OVERFLOW, ge=0)
    migrate_on_start: bool = True

    # Security.
    secret_key: str | None = None
    access_token_minutes: int = Field(default=15, ge=1)
    refresh_token_days: int = Field(default=30, ge=1)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    password_hash_threads: int = Field(default=4, ge=1)
    # Password hashes waiting for a thread, past which another is refused (503): each waits
    # holding its request's database connection.
    password_hash_queue: int = Field(default=8, ge=0)
    auth_rate_limit: str = "10/minute"
    # Per account: password changes, registrations of one email, and failed logins
    # from one client address. Failed logins from all addresses together have the looser
    # cap below, so that a stranger cannot cheaply lock an account out.
    auth_account_rate_limit: str = "10/hour"
    auth_account_login_rate_limit: str = "100/hour"
    redis_url: str | None = None
    max_body_bytes: int = Field(default=12 * 1024 * 1024, ge=1024)
    # A request's line and headers arrive whole within this long, and its body pauses no
    # longer than this between reads: a slow client cannot hold a connection for ever.
    request_read_seconds: float = Field(default=30.0, gt=0)
    max_json_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    cors_origins: Annotated[list[str], NoDecode] = []
    allow_private_networks: bool = False
    import_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # One template render: loop iterations, calls and every 100 characters built are steps.
    template_max_steps: int = Field(default=100_000, ge=100)
    template_max_output_chars: int = Field(default=1_000_000, ge=1_000)
    # Invitations to an organization: how long one can be accepted, and how many an
    # organization may send in an hour.
    invitation_hours: int = Field(default=72, ge=1)
    invitations_per_hour: int = Field(default=50, ge=1)
    # Organizations one account may create in an hour: each has limits of its own.
    organizations_per_hour: int = Field(default=20, ge=1)

    # Runs and workers.
    workers: int = Field(
        default=4, ge=0, description="Jobs this process runs at once; 0 = API only"
    )
    max_run_concurrency: int = Field(default=100, ge=1)
    run_chunk_size: int = Field(default=500, ge=1)
    job_lease_seconds: float = Field(default=30.0, gt=0)
    chunk_turn_seconds: float = Field(default=30.0, gt=0)
    # Live streams (/public/runs/{id}/events).
    stream_token_minutes: int = Field(default=60, ge=1)
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    sse_send_timeout_seconds: float = Field(default=10.0, gt=0)
    sse_max_lifetime_seconds: float = Field(default=1800.0, gt=0)
    sse_retry_ms: int = Field(default=2000, ge=0)
    sse_buffer_events: int = Field(default=1000, ge=10)
    # Streams open at once, per organization and in all, on one process: one tenant cannot
    # take every socket (beyond: 429, then 503). Their replays read a quarter of the pool's
    # connections at most, however many streams open (notifications/hub.py).
    sse_max_streams_per_organization: int = Field(default=2000, ge=1)
    sse_max_streams: int = Field(default=10000, ge=1)
    # How often an open stream's credential is checked again (revoked, logged out, removed).
    sse_recheck_seconds: float = Field(default=60.0, gt=0)
    worker_drain_seconds: float = Field(default=10.0, ge=0)

    # Provider secrets are encrypted with these keys (newest first; older ones still decrypt,
    # for rotation). Development mode generates one under data_dir, as for the secret key.
    encryption_keys: Annotated[list[str], NoDecode] = []

    # Observability. /metrics answers only to `Authorization: Bearer <metrics_token>`; with no
    # token it is off. Processes on one host share metrics_dir (prometheus multiprocess mode).
    metrics_token: str | None = None
    metrics_dir: Path | None = None
    # Traces go to an OTLP/HTTP collector when this (or the standard OTEL_EXPORTER_OTLP_*
    # variables) is set; off otherwise.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "assay"

    # Webhooks.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=8, ge=1, le=20)
    # Seconds before each retry of a failed delivery (the last repeats): the Standard Webhooks
    # schedule, so eight attempts span a day and a quarter of a receiver being down.
    webhook_retry_seconds: Annotated[list[float], NoDecode] = [5, 300, 1800, 7200, 18000, 36000]
    webhook_secret_overlap_hours: int = Field(default=24, ge=0, le=8760)
    # Deliveries one organization may have under way at once, across processes: its slow
    # receivers cannot hold every delivery slot while other organizations' messages wait.
    webhook_deliveries_per_organization: int = Field(default=1, ge=1)
    # Test messages and redeliveries one organization may ask for: each is a job of the
    # shared workers, for up to ASSAY_WEBHOOK_MAX_ATTEMPTS attempts.
    webhook_manual_sends_per_hour: int = Field(default=60, ge=1)
    # Model test-connections one organization may make: each is a real, perhaps paid, call.
    connection_tests_per_hour: int = Field(default=120, ge=1)

    # Retention, in days ("off" keeps forever). Results are never pruned.
    retention_run_events_days: Annotated[int | None, NoDecode] = 30
    retention_jobs_days: Annotated[int | None, NoDecode] = 7
    retention_dead_jobs_days: Annotated[int | None, NoDecode] = 30
    retention_sessions_days: Annotated[int | None, NoDecode] = 7
    retention_invitations_days: Annotated[int | None, NoDecode] = 30
    retention_response_cache_days: Annotated[int | None, NoDecode] = 30
    maintenance_interval_seconds: float = Field(default=3600.0, gt=0)

    # Serving: what `python -m app serve` binds (its flags override these). The port is PORT,
    # unprefixed, as hosting platforms set it.
    host: str = "127.0.0.1"
    port: int = Field(
        default=DEFAULT_PORT, ge=1, le=65535, validation_alias=AliasChoices("PORT", "port")
    )
    # Proxies trusted for X-Forwarded-For/Proto: comma-separated addresses, or *; none by default.
    forwarded_allow_ips: str = ""

    # Logging.
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _port_unset_when_empty(cls, value: object) -> object:
        # PORT= (an environment template's empty value) meant the default before PORT was a
        # setting of every command: it still does.
        return DEFAULT_PORT if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_retry_seconds", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and (
            not value or any(not 0 <= float(v) <= _WEEK_SECONDS for v in value)
        ):
            raise ValueError(
                "a comma-separated list of seconds, none negative, all finite, none above a week"
                " (604800)"
            )
        return value

    @field_validator("auth_rate_limit", "auth_account_rate_limit", "auth_account_login_rate_limit")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        """Read at start-up, not at the first login (a 500 for every one after)."""
        try:
            rates = limits.parse_many(value)
        except ValueError as exc:
            raise ValueError(f"a rate such as 10/minute: {exc}") from None
        if len(rates) != 1:  # the limiter applies one
            raise ValueError("one rate, such as 10/minute")
        if rates[0].amount < 1:
            raise ValueError("a rate of at least 1 (0 would refuse everyone)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _long_enough(cls, value: object) -> object:
        if value == "":  # as compose passes an unset one
            return None
        if isinstance(value, str) and len(value) < 16:
            raise ValueError("at least 16 characters: it is the only guard of /metrics")
        return value

    @field_validator(
        "retention_run_events_days",
        "retention_jobs_days",
        "retention_dead_jobs_days",
        "retention_sessions_days",
        "retention_invitations_days",
        "retention_response_cache_days",
        mode="before",
    )
    @classmethod
    def _days_or_off(cls, value: object) -> object:
        # Past a century the cutoff soon leaves PostgreSQL's timestamps (and, past 2**31, the
        # prune's integer): every prune would fail, of every kind. "off" keeps for ever.
        refused = f'a whole number of days (1 to {MOST_RETENTION_DAYS}), or "off"'
        if isinstance(value, str):
            value = value.strip().lower()
            if value in {"off", "none", "never", ""}:
                return None
            if not value.isdigit():
                raise ValueError(refused)
            value = int(value)
        if isinstance(value, int) and not 1 <= value <= MOST_RETENTION_DAYS:
            raise ValueError(refused)
        return value

    @property
    def embedded(self) -> bool:
        """Development mode: the database is the embedded PostgreSQL under data_dir."""
        return self.database_url is None

    @property
    def metrics_directory(self) -> Path | None:
        """Where the host's processes write their metrics: configured, or (embedded mode) under
        data_dir, which every process of a development setup shares, one directory per boot of
        the machine (the files of processes of an earlier boot are of no use)."""
        if self.metrics_dir is not None:
            return self.metrics_dir
        return self.data_dir / "metrics" / _boot_id() if self.embedded else None

    @property
    def owner_database_url(self) -> str | None:
        return self.migration_database_url or self.database_url

    def resolve_secret_key(self) -> str:
        """The signing key: configured, or (embedded mode only) generated once under data_dir."""
        key = self.secret_key
        if key is not None and key.strip().lower() not in PLACEHOLDER_SECRETS:
            if len(key) < MIN_SECRET_LENGTH:
                raise InsecureSecretKey(
                    f"ASSAY_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters"
                )
            return key
        if not self.embedded:
            raise InsecureSecretKey(
                "ASSAY_SECRET_KEY is missing or a placeholder; set a random value of at least "
                f"{MIN_SECRET_LENGTH} characters (for example: openssl rand -hex 32)"
            )
        key = _development_secret(self.data_dir)
        if len(key) < MIN_SECRET_LENGTH:  # the file emptied or cut by hand
            raise InsecureSecretKey(
                f"{self.data_dir / 'secret_key'} holds fewer than {MIN_SECRET_LENGTH} characters;"
                " delete it to have a new one made (every login session then ends)"
            )
        return key

    def resolve_encryption_keys(self) -> list[str]:
        """The keys of stored secrets, newest first: configured, or (embedded mode only) one
        generated once under data_dir."""
        keys = self.encryption_keys
        for position, key in enumerate(keys, start=1):
            if not _is_encryption_key(key):
                # Its position only: the value is a secret, even a malformed one.
                raise InvalidEncryptionKeys(
                    f"ASSAY_ENCRYPTION_KEYS: key {position} of {len(keys)} is not a Fernet key"
                    " (32 random bytes in url-safe base64: 44 characters ending in '=');"
                    f" generate one with: {GENERATE_ENCRYPTION_KEY}"
                )
        if keys:
            return list(keys)
        if not self.embedded:
            raise InvalidEncryptionKeys(
                "ASSAY_ENCRYPTION_KEYS is not set: stored provider secrets need their own key,"
                " apart from ASSAY_SECRET_KEY. Generate one with: "
                f"{GENERATE_ENCRYPTION_KEY} (a comma-separated list, newest first, rotates"
                " keys; values stored before keep decrypting with ASSAY_SECRET_KEY until"
                " `python -m app reencrypt-secrets` rewrites them)"
            )
        return [_development_encryption_key(self.data_dir)]


def _development_secret(data_dir: Path) -> str:
    return _generated_once(data_dir / "secret_key", lambda: secrets.token_urlsafe(48))


def _development_encryption_key(data_dir: Path) -> str:
    return _generated_once(data_dir / "encryption_key", _new_encryption_key)


def _new_encryption_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(ENCRYPTION_KEY_BYTES)).decode()


def _is_encryption_key(key: str) -> bool:
    return ENCRYPTION_KEY_PATTERN.fullmatch(key) is not None


def _generated_once(path: Path, generate: Callable[[], str]) -> str:
    """The value in `path`, written there first (mode 0600) when missing."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    # Write aside, then link into place: link fails when another process won the race,
    # and a reader never sees a half-written file. The draft is private from its creation.
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value)
    draft.chmod(0o600)  # whatever the umask
    try:
        os.link(draft, path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        draft.unlink()
    return value


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "boot"
    except OSError:
        return "boot"


@lru_cache
def get_settings() -> Settings:
    return Settings()
