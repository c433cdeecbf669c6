"""Credentials: password hashing, access tokens (JWT), API keys and refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import anyio
import bcrypt
import email_validator
import jwt
from jwt.algorithms import HMACAlgorithm

from utils.errors import Forbidden, Unavailable

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "assay_"
REFRESH_TOKEN_PREFIX = "assay_rt_"
_T = TypeVar("_T")


class Role(StrEnum):
    viewer = "viewer"
    member = "member"
    admin = "admin"
    owner = "owner"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank


_ROLE_RANK = {Role.viewer: 0, Role.member: 1, Role.admin: 2, Role.owner: 3}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user through a login session, or an API key. Always one organization."""

    organization_id: uuid.UUID
    role: Role
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None

    def require_user(self) -> uuid.UUID:
        if self.user_id is None:
            raise Forbidden("This needs a user's access token; API keys act for an organization")
        return self.user_id


# --- passwords ------------------------------------------------------------------------------

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_BYTES = 72  # bcrypt reads no further than 72 bytes
PASSWORD_RULE = (
    f"at least {PASSWORD_MIN_LENGTH} characters, at most {PASSWORD_MAX_BYTES} bytes, "
    "with at least one letter and one digit or symbol, and not containing the email's name part"
)


def normal_email(text: str) -> str:
    """An email address as accounts keep it: as the address check normalises it (Unicode NFC,
    an internationalised domain in Unicode), in lower case; text that is no address, trimmed
    and in lower case (it matches no account)."""
    try:
        checked = email_validator.validate_email(text.strip(), check_deliverability=False)
    except email_validator.EmailNotValidError:
        return text.strip().lower()
    return checked.normalized.lower()


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why a password is too weak, or None when it is acceptable."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"must be at least {PASSWORD_MIN_LENGTH} characters"
    if len(password.encode()) > PASSWORD_MAX_BYTES:
        return f"must be at most {PASSWORD_MAX_BYTES} bytes"
    if not any(ch.isalpha() for ch in password):
        return "must contain at least one letter"
    if all(ch.isalpha() for ch in password):
        return "must contain at least one digit or symbol"
    if len(set(password)) < 4:
        return "must not repeat the same few characters"
    local_part = (email or "").split("@")[0].lower()
    if len(local_part) >= 4 and local_part in password.lower():
        return "must not contain the email address"
    return None


class PasswordHasher:
    """bcrypt in a bounded thread pool, so hashing never blocks the event loop, with a bounded
    queue: each waiting request holds a database connection, and a flood of password checks
    (any account may change its password) would hold them all. Past `threads + queue` hashes
    in flight, another is refused at once (503, try again in a second)."""

    def __init__(self, rounds: int, threads: int, queue: int = 8) -> None:
        self.rounds = rounds
        self._limiter = anyio.CapacityLimiter(threads)
        self._most = threads + queue
        self._in_flight = 0
        # Verifying against this keeps unknown-email logins as slow as known ones: a hash of
        # the same cost (checking costs what the cost factor says), made without hashing
        # anything, so start-up does not spend a hash's time on it.
        self._dummy_hash = bcrypt.gensalt(rounds).decode() + "." * 31

    async def hash(self, password: str) -> str:
        def work() -> str:
            return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.rounds)).decode()

        return await self._run(work)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        target = password_hash or self._dummy_hash

        def work() -> bool:
            try:
                return bcrypt.checkpw(password.encode(), target.encode())
            except ValueError:
                return False

        ok = await self._run(work)
        return ok and password_hash is not None

    async def _run(self, work: Callable[[], _T]) -> _T:
        if self._in_flight >= self._most:
            raise Unavailable(
                "password checks are at capacity on this server: try again in a moment",
                headers={"Retry-After": "1"},
            )
        self._in_flight += 1
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._limiter)
        finally:
            self._in_flight -= 1


# --- access tokens --------------------------------------------------------------------------


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    organization_id: uuid.UUID
    role: Role
    session_id: uuid.UUID
    jti: str


class _PreparedHmac(HMACAlgorithm):
    """HS256 whose checks of the key (not a PEM, SSH or DER key, not a JWK, long enough) run
    once per secret rather than on every token: they read the key alone, and parsing it as a
    DER key and a certificate costs more than verifying the token. Every token is still
    verified, and its claims checked, in full."""

    MAX_KEYS = 8  # the process's secret key; tests make a few

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared: dict[Any, bytes] = {}
        self._length_warning: dict[bytes, str | None] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)  # raises for a key unfit for HMAC: not kept
            if len(self._prepared) >= self.MAX_KEYS:
                self._prepared.clear()
            self._prepared[key] = prepared
        return prepared

    def check_key_length(self, key: Any) -> str | None:
        if key not in self._length_warning:
            if len(self._length_warning) >= self.MAX_KEYS:
                self._length_warning.clear()
            self._length_warning[key] = super().check_key_length(key)
        return self._length_warning[key]


# A decoder of our own, so the prepared key is only ever used for our tokens; PyJWT's module
# functions keep theirs. (`_jws` is how PyJWT wires its own module-level decoder too.)
_decoder = jwt.PyJWT()
_decoder._jws.unregister_algorithm(JWT_ALGORITHM)
_decoder._jws.register_algorithm(JWT_ALGORITHM, _PreparedHmac())


def issue_access_token(
    *,
    secret: str,
    user_id: uuid.UUID,
    organization_id: uuid.UUID,
    role: Role,
    session_id: uuid.UUID,
    lifetime: timedelta,
) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "org_id": str(organization_id),
        "role": role.value,
        "sid": str(session_id),
        "typ": "access",
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(token: str, *, secret: str) -> AccessClaims:
    try:
        payload = _decoder.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "org_id", "role", "sid", "exp", "jti"]},
        )
        if payload.get("typ") != "access":
            raise InvalidToken("not an access token")
        return AccessClaims(
            user_id=uuid.UUID(payload["sub"]),
            organization_id=uuid.UUID(payload["org_id"]),
            role=Role(payload["role"]),
            session_id=uuid.UUID(payload["sid"]),
            jti=payload["jti"],
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the access token has expired") from exc
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("the access token is invalid") from exc


# --- stream tokens: one run's live events, for clients that cannot send headers -------------


@dataclass(frozen=True)
class StreamClaims:
    """A run's stream token, with the credential that issued it (a user's login session or an
    API key): the stream opens only while that credential is still good."""

    run_id: uuid.UUID
    organization_id: uuid.UUID
    expires_at: datetime
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


def issue_stream_token(
    *, secret: str, run_id: uuid.UUID, principal: Principal, lifetime: timedelta
) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    expires = now + lifetime
    payload: dict[str, Any] = {
        "run": str(run_id),
        "org_id": str(principal.organization_id),
        "typ": "stream",
        "iat": now,
        "exp": expires,
    }
    if principal.session_id is not None and principal.user_id is not None:
        payload |= {"sub": str(principal.user_id), "sid": str(principal.session_id)}
    elif principal.api_key_id is not None:
        payload["kid"] = str(principal.api_key_id)
    else:
        raise ValueError("a stream token is issued by a login session or an API key")
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM), expires


def decode_stream_token(token: str, *, secret: str) -> StreamClaims:
    try:
        payload = _decoder.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["run", "org_id", "exp"]},
        )
        if payload.get("typ") != "stream":
            raise InvalidToken("not a stream token")
        if "sid" not in payload and "kid" not in payload:
            raise InvalidToken("the stream token names no credential; ask for a new one")
        return StreamClaims(
            run_id=uuid.UUID(payload["run"]),
            organization_id=uuid.UUID(payload["org_id"]),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
            user_id=uuid.UUID(payload["sub"]) if "sid" in payload else None,
            session_id=uuid.UUID(payload["sid"]) if "sid" in payload else None,
            api_key_id=uuid.UUID(payload["kid"]) if "kid" in payload else None,
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the stream token has expired") from exc
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("the stream token is invalid") from exc


# --- opaque secrets (API keys, refresh tokens) ------------------------------------------------


def hash_secret(value: str) -> str:
    """SHA-256 of a high-entropy secret: enough for random tokens, and fast to look up."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> str:
    """Drawn again while it would read as a refresh token (`looks_like_api_key` false)."""
    while not looks_like_api_key(key := API_KEY_PREFIX + secrets.token_urlsafe(32)):
        pass
    return key


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(value: str) -> bool:
    return value.startswith(API_KEY_PREFIX) and not value.startswith(REFRESH_TOKEN_PREFIX)
