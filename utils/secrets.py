"""Encryption at rest for provider secrets (API keys, secret headers), keyed by the secret key."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"assay/provider-secrets/v1"


class SecretUnreadable(Exception):
    """Stored with another secret key: the value must be entered again."""


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise SecretUnreadable("stored secret cannot be decrypted with this key") from exc


def mask(value: str) -> str:
    """What may be shown of a secret: its start and its last four characters."""
    if len(value) <= 8:
        return "…" + value[-2:] if len(value) > 4 else "…"
    head = value[:3] if value[:3].isascii() else ""
    return f"{head}…{value[-4:]}"
