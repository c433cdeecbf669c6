"""Encryption at rest for stored secrets (provider API keys, secret headers, signing secrets).

Values are Fernet tokens under the encryption keys (ASSAY_ENCRYPTION_KEYS): the newest key
encrypts, every key decrypts, so keys rotate without losing anything. Values stored before the
encryption keys existed were encrypted with a key derived from the token-signing secret: that
derived key still decrypts, last of all, until `python -m app reencrypt-secrets` has rewritten
them under the newest key.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_LEGACY_INFO = b"assay/provider-secrets/v1"


class SecretUnreadable(Exception):
    """Stored under a key this process does not hold: the value must be entered again."""


def legacy_key(secret_key: str) -> str:
    """The key values were encrypted with before ASSAY_ENCRYPTION_KEYS: derived (HKDF-SHA256)
    from the token-signing secret."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LEGACY_INFO).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(derived).decode()


class SecretBox:
    """Encrypts with the first of `keys` (Fernet keys, newest first) and decrypts with any of
    them, then with the legacy key derived from `legacy_secret_key` when one is given."""

    def __init__(self, keys: Sequence[str], *, legacy_secret_key: str | None = None) -> None:
        if isinstance(keys, str) or not keys:
            raise ValueError("SecretBox takes a non-empty list of Fernet keys, newest first")
        self._newest = Fernet(keys[0])
        decrypting = [Fernet(key) for key in keys]
        if legacy_secret_key is not None:
            decrypting.append(Fernet(legacy_key(legacy_secret_key)))
        self._all = MultiFernet(decrypting)

    def encrypt(self, value: str) -> bytes:
        return self._newest.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._all.decrypt(token).decode()
        except InvalidToken as exc:
            raise SecretUnreadable("stored secret cannot be decrypted with these keys") from exc

    def reencrypt(self, token: bytes) -> bytes | None:
        """The value encrypted again under the newest key, or None when it already is (so a
        second pass rewrites nothing). Raises SecretUnreadable when no key opens it."""
        try:
            self._newest.decrypt(token)
        except InvalidToken:
            pass
        else:
            return None
        try:
            return self._all.rotate(token)
        except InvalidToken as exc:
            raise SecretUnreadable("stored secret cannot be decrypted with these keys") from exc


def mask(value: str) -> str:
    """What may be shown of a secret (to viewers too): never more than a sixth of it, and of a
    long one its start (a provider's prefix, `sk-`) and its last four characters. A short
    key showed seven of its twelve characters (`tok…c123`), leaving the rest to guess."""
    if len(value) < 12:
        return "…"
    if len(value) < 24:
        return "…" + value[-2:]
    if len(value) < 42:
        return "…" + value[-4:]
    head = value[:3] if value[:3].isascii() else ""
    return f"{head}…{value[-4:]}"
