from __future__ import annotations

import pytest
from pydantic import ValidationError

from utils.config import InsecureSecretKey, Settings


def test_production_without_secret_key_is_refused(tmp_path):
    settings = Settings(
        database_url="postgresql://app@db/assay", data_dir=tmp_path, secret_key=None
    )
    with pytest.raises(InsecureSecretKey, match="ASSAY_SECRET_KEY"):
        settings.resolve_secret_key()


@pytest.mark.parametrize("placeholder", ["changeme", "secret", "", "CHANGEME"])
def test_production_with_placeholder_secret_is_refused(tmp_path, placeholder):
    settings = Settings(
        database_url="postgresql://app@db/assay", data_dir=tmp_path, secret_key=placeholder
    )
    with pytest.raises(InsecureSecretKey):
        settings.resolve_secret_key()


def test_short_secret_is_refused_everywhere(tmp_path):
    with pytest.raises(InsecureSecretKey, match="at least 32"):
        Settings(data_dir=tmp_path, secret_key="short-but-not-placeholder").resolve_secret_key()


def test_development_generates_one_key_and_keeps_it(tmp_path):
    first = Settings(data_dir=tmp_path, secret_key=None).resolve_secret_key()
    second = Settings(data_dir=tmp_path, secret_key=None).resolve_secret_key()
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("kept", ["", "\n", "cut-short"])
def test_a_kept_development_key_emptied_or_cut_is_refused(tmp_path, kept):
    """An emptied file was taken as the key: tokens signed with an empty one."""
    (tmp_path / "secret_key").write_text(kept)
    with pytest.raises(InsecureSecretKey, match="delete it to have a new one made"):
        Settings(data_dir=tmp_path, secret_key=None).resolve_secret_key()


def test_configured_secret_is_used(tmp_path):
    key = "k" * 40
    assert Settings(data_dir=tmp_path, secret_key=key).resolve_secret_key() == key


def test_cors_origins_accept_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("ASSAY_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


def test_migration_url_defaults_to_the_runtime_url():
    settings = Settings(database_url="postgresql://app@db/assay")
    assert settings.owner_database_url == "postgresql://app@db/assay"
    assert not settings.embedded


def test_a_redis_url_gives_a_shared_rate_limit_store():
    from utils.ratelimit import RateLimiter

    # (no connection is made until the first request counts)
    assert type(RateLimiter("redis://127.0.0.1:1/0")._storage).__name__ == "RedisStorage"
    assert type(RateLimiter()._storage).__name__ == "MemoryStorage"


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("auth_rate_limit", "10 per fortnight", "a rate such as"),
        ("auth_account_rate_limit", "0/minute", "at least 1"),
        ("auth_account_login_rate_limit", "10/minute;100/hour", "one rate"),  # one applied
        ("webhook_retry_seconds", "5,nan", "all finite"),
        ("webhook_retry_seconds", "5,inf", "all finite"),
        # Past what a datetime holds, every failed delivery's retry went unrecorded.
        ("webhook_retry_seconds", "5,1e15", "none above a week"),
        ("webhook_secret_overlap_hours", "100000000", "less than or equal to 8760"),
        ("log_level", "verbose", "log_level"),
        ("metrics_token", "short", "at least 16"),
        # Past a century the cutoff leaves PostgreSQL's timestamps: every prune failed.
        ("retention_jobs_days", "3000000", "1 to 36500"),
        ("retention_run_events_days", 9_999_999_999, "1 to 36500"),
        ("retention_sessions_days", "0", "1 to 36500"),
        ("retention_response_cache_days", "-1", "1 to 36500"),
    ],
)
def test_settings_that_would_fail_later_are_refused_at_start(name, value, complaint):
    """Each was taken, then failed at its first use: every login a 500, a retry's delay
    NaN, the logging set-up a traceback, /metrics guarded by a guessable token, every secret
    rotation a 500."""
    with pytest.raises(ValidationError) as refused:
        Settings(**{name: value})
    assert complaint in str(refused.value)


def test_settings_written_as_operators_do_are_taken():
    settings = Settings(auth_rate_limit="20 per minute", log_level="warning", metrics_token="")
    assert (settings.log_level, settings.metrics_token) == ("WARNING", None)
    kept = Settings(retention_jobs_days="36500", retention_run_events_days="off")
    assert (kept.retention_jobs_days, kept.retention_run_events_days) == (36500, None)


def test_port_is_read_from_port_and_an_empty_one_is_the_default(monkeypatch) -> None:
    """PORT, unprefixed as hosting platforms set it; empty (an environment template's blank)
    it is the default, as it was before every command read it."""
    monkeypatch.setenv("ASSAY_PORT", "1234")  # no such setting: the port is PORT's
    monkeypatch.setenv("PORT", "")
    assert Settings().port == 8000
    monkeypatch.setenv("PORT", "8123")
    assert Settings().port == 8123
    assert Settings(port=9001).port == 9001
