"""Access tokens are verified in full on every decode: the key's own checks run once per secret
(utils.auth._PreparedHmac), nothing about a token is remembered."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from utils.auth import InvalidToken, Role, decode_access_token, issue_access_token

SECRET = "a-secret-key-long-enough-for-hs256-0123456789"


def _token(secret: str = SECRET, lifetime: timedelta = timedelta(minutes=5)) -> str:
    return issue_access_token(
        secret=secret,
        user_id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        role=Role.member,
        session_id=uuid.uuid4(),
        lifetime=lifetime,
    )


def test_a_token_is_read_with_its_own_secret_only():
    token = _token()
    assert decode_access_token(token, secret=SECRET).role is Role.member
    with pytest.raises(InvalidToken, match="invalid"):
        decode_access_token(token, secret=SECRET + "-rotated")
    with pytest.raises(InvalidToken, match="invalid"):
        decode_access_token(
            _token(secret="another-secret-of-enough-length-0123456789"), secret=SECRET
        )
    assert decode_access_token(token, secret=SECRET).role is Role.member


def test_a_token_accepted_once_is_refused_once_it_expires():
    token = _token(lifetime=timedelta(seconds=2))
    decode_access_token(token, secret=SECRET)
    time.sleep(2.1)
    with pytest.raises(InvalidToken, match="expired"):
        decode_access_token(token, secret=SECRET)


def test_a_tampered_token_is_refused():
    header, payload, signature = _token().split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(InvalidToken):
        decode_access_token(f"{header}.{payload}.{flipped}", secret=SECRET)


@pytest.mark.parametrize("algorithm", ["HS512", "none"])
def test_only_hs256_is_accepted(algorithm: str):
    now = datetime.now(UTC)
    claims = {
        "sub": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "role": "owner",
        "sid": str(uuid.uuid4()),
        "typ": "access",
        "exp": now + timedelta(minutes=5),
        "jti": "x",
    }
    token = jwt.encode(claims, "" if algorithm == "none" else SECRET, algorithm=algorithm)
    with pytest.raises(InvalidToken):
        decode_access_token(token, secret=SECRET)


def test_a_key_unfit_for_hmac_is_refused_every_time():
    pem = (
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    )
    token = _token(secret=SECRET)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            decode_access_token(token, secret=pem)
