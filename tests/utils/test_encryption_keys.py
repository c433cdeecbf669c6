"""ASSAY_ENCRYPTION_KEYS: validated at start, required in production, generated once in
development; stored secrets depend on them and not on the token-signing secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.utils.test_secrets import LEGACY_TOKEN, LEGACY_VALUE
from tests.utils.test_secrets import SIGNING_SECRET as LEGACY_SIGNING_SECRET
from utils.config import GENERATE_ENCRYPTION_KEY, InvalidEncryptionKeys, Settings
from utils.runtime import Runtime
from utils.secrets import SecretBox, SecretUnreadable

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_URL = "postgresql://app@db/assay"
SIGNING_SECRET = "s" * 40
NEW = Fernet.generate_key().decode()
OLD = Fernet.generate_key().decode()


def production(tmp_path, **values) -> Settings:
    values.setdefault("secret_key", SIGNING_SECRET)
    return Settings(database_url=PRODUCTION_URL, data_dir=tmp_path, **values)


def test_production_without_encryption_keys_is_refused(tmp_path):
    with pytest.raises(InvalidEncryptionKeys) as refused:
        production(tmp_path).resolve_encryption_keys()
    message = str(refused.value)
    assert "ASSAY_ENCRYPTION_KEYS" in message
    assert "urlsafe_b64encode(os.urandom(32))" in message
    assert not any(tmp_path.iterdir())  # nothing generated outside development


def test_production_start_is_refused_without_encryption_keys(tmp_path):
    with pytest.raises(InvalidEncryptionKeys, match="ASSAY_ENCRYPTION_KEYS"):
        Runtime.from_settings(production(tmp_path))


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-key",
        NEW[:-1],  # 43 characters
        NEW.replace("=", "A"),  # no padding
        "+" * 43 + "=",  # the standard alphabet, not the url-safe one
        "é" * 43 + "=",
        NEW + "AAAA",  # 35 bytes
    ],
)
def test_a_malformed_key_is_refused_by_position_never_echoed(tmp_path, bad):
    settings = production(tmp_path, encryption_keys=[NEW, bad])
    with pytest.raises(InvalidEncryptionKeys) as refused:
        settings.resolve_encryption_keys()
    message = str(refused.value)
    assert "ASSAY_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key" in message
    assert bad not in message
    assert NEW not in message


def test_the_list_comes_from_the_environment_newest_first(monkeypatch, tmp_path):
    monkeypatch.setenv("ASSAY_ENCRYPTION_KEYS", f" {NEW} ,{OLD},")
    monkeypatch.setenv("ASSAY_DATABASE_URL", PRODUCTION_URL)
    assert Settings(data_dir=tmp_path).resolve_encryption_keys() == [NEW, OLD]


def test_the_documented_command_generates_a_valid_key(tmp_path):
    command = GENERATE_ENCRYPTION_KEY.replace("python", sys.executable, 1)
    key = subprocess.run(
        command, shell=True, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert production(tmp_path, encryption_keys=[key]).resolve_encryption_keys() == [key]
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"


def test_development_generates_one_key_keeps_it_and_keeps_it_private(tmp_path):
    development = Settings(data_dir=tmp_path, secret_key=None)
    first = development.resolve_encryption_keys()
    second = Settings(data_dir=tmp_path, secret_key=None).resolve_encryption_keys()
    assert first == second
    (key,) = first
    Fernet(key)  # a usable key
    path = tmp_path / "encryption_key"
    assert path.read_text() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert key != development.resolve_secret_key()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encryption_key", "secret_key"]


def test_processes_starting_together_agree_on_the_development_key(tmp_path):
    script = (
        "from utils.config import Settings;"
        f"print(Settings(data_dir={str(tmp_path)!r}).resolve_encryption_keys()[0])"
    )
    no_settings = {"PATH": "/usr/bin:/bin"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=no_settings,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert keys == {(tmp_path / "encryption_key").read_text()}
    assert [p.name for p in tmp_path.iterdir()] == ["encryption_key"]  # no draft left behind


def test_stored_secrets_do_not_depend_on_the_signing_secret(tmp_path):
    before = Runtime.from_settings(production(tmp_path, encryption_keys=[NEW]))
    token = before.secret_box.encrypt("sk-provider")
    rotated_signing = production(
        tmp_path, encryption_keys=[NEW], secret_key="a-brand-new-signing-secret-of-length-40"
    )
    after = Runtime.from_settings(rotated_signing)
    assert after.secret_key != before.secret_key
    assert after.secret_box.decrypt(token) == "sk-provider"


def test_a_rotated_key_list_reads_old_values_and_writes_with_the_new_key(tmp_path):
    old_runtime = Runtime.from_settings(production(tmp_path, encryption_keys=[OLD]))
    stored = old_runtime.secret_box.encrypt("sk-provider")
    rotated = Runtime.from_settings(production(tmp_path, encryption_keys=[NEW, OLD]))
    assert rotated.secret_box.decrypt(stored) == "sk-provider"
    with pytest.raises(SecretUnreadable):
        old_runtime.secret_box.decrypt(rotated.secret_box.encrypt("sk-next"))


def test_an_upgraded_deployment_still_reads_what_it_stored_before(tmp_path):
    upgraded = production(tmp_path, encryption_keys=[NEW], secret_key=LEGACY_SIGNING_SECRET)
    box = Runtime.from_settings(upgraded).secret_box
    assert box.decrypt(LEGACY_TOKEN) == LEGACY_VALUE
    assert SecretBox([NEW]).decrypt(box.encrypt("sk-new")) == "sk-new"  # written under NEW
