"""The secret box: the newest key encrypts, every key decrypts, values stored before the
encryption keys existed still open with the signing secret, and re-encryption moves a value to
the newest key once."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from utils.secrets import SecretBox, SecretUnreadable

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
SIGNING_SECRET = "legacy-signing-secret-of-sufficient-length-42"
# Encrypted by the earlier scheme (a key derived from the signing secret) before the encryption
# keys existed: what an upgraded deployment has in its database.
LEGACY_TOKEN = (
    b"gAAAAABrD6KDLXydwFB4Gw8l9pwoToQLOdPVWB0F5vPKRqYcvNKVqT-pJQuMfICxqkYfmzY4Gj3IFDV3SW3YRMSoxa"
    b"CxQm6CPKVgGBwcQBHfaUm0IreQYyg="
)
LEGACY_VALUE = "sk-legacy-5f2a9c"


def test_the_newest_key_encrypts_and_every_key_decrypts():
    rotated = SecretBox([NEW, OLD])
    from_before = SecretBox([OLD]).encrypt("sk-before")
    assert rotated.decrypt(from_before) == "sk-before"

    token = rotated.encrypt("sk-after")
    assert SecretBox([NEW]).decrypt(token) == "sk-after"
    with pytest.raises(SecretUnreadable):
        SecretBox([OLD]).decrypt(token)


def test_a_value_stored_before_the_encryption_keys_still_decrypts():
    assert SecretBox([NEW], legacy_secret_key=SIGNING_SECRET).decrypt(LEGACY_TOKEN) == LEGACY_VALUE


def test_the_legacy_key_needs_the_same_signing_secret_and_is_never_used_to_encrypt():
    with pytest.raises(SecretUnreadable):
        SecretBox([NEW]).decrypt(LEGACY_TOKEN)
    with pytest.raises(SecretUnreadable):
        SecretBox([NEW], legacy_secret_key="another-signing-secret-of-length-4242").decrypt(
            LEGACY_TOKEN
        )
    token = SecretBox([NEW], legacy_secret_key=SIGNING_SECRET).encrypt("sk-new")
    other_signing_secret = SecretBox(
        [NEW], legacy_secret_key="another-signing-secret-of-length-4242"
    )
    assert other_signing_secret.decrypt(token) == "sk-new"


def test_reencrypt_moves_older_and_legacy_values_to_the_newest_key_once():
    box = SecretBox([NEW, OLD], legacy_secret_key=SIGNING_SECRET)
    newest_only = SecretBox([NEW])

    from_old = box.reencrypt(SecretBox([OLD]).encrypt("sk-old"))
    from_legacy = box.reencrypt(LEGACY_TOKEN)
    assert from_old is not None and from_legacy is not None
    assert newest_only.decrypt(from_old) == "sk-old"
    assert newest_only.decrypt(from_legacy) == LEGACY_VALUE

    assert box.reencrypt(from_old) is None
    assert box.reencrypt(box.encrypt("sk-current")) is None


def test_reencrypt_of_a_value_no_key_opens_is_refused():
    stranger = SecretBox([Fernet.generate_key().decode()]).encrypt("sk-lost")
    with pytest.raises(SecretUnreadable):
        SecretBox([NEW, OLD], legacy_secret_key=SIGNING_SECRET).reencrypt(stranger)


@pytest.mark.parametrize("keys", [[], NEW])
def test_a_box_takes_a_non_empty_list_of_keys(keys):
    with pytest.raises(ValueError, match="list of Fernet keys"):
        SecretBox(keys)
