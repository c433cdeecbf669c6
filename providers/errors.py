"""What a failed call to a model is: a `TargetError` whose kind the engine can act on (retry a
rate limit or a server error, count a timeout) and a message in plain words."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

ErrorKind = Literal[
    "timeout",
    "rate_limited",
    "server_error",
    "client_error",
    "auth_error",
    "connection_error",
    "invalid_response",
    "configuration_error",
    "circuit_open",
]


class TargetError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.spent: float | None = None  # set by whoever made calls before this one failed
        self.paid: float | None = None  # and of that, what was not answered from a cache
        # An agent's steps, or a conversation's turns, done before this call failed.
        self.trajectory: list[dict[str, Any]] | None = None


# An error body is read this far, and its message kept this long once the credentials it may
# echo are redacted: cut before, a key across the cut would keep its visible part.
DETAIL_READ_CHARS = 4000
MESSAGE_CHARS = 700


def http_error(status: int, detail: str, headers: dict[str, str] | None) -> TargetError:
    retry_after = _retry_after((headers or {}).get("retry-after"))
    kind: ErrorKind
    if status == 429:
        kind = "rate_limited"
    elif status in (401, 403):
        kind = "auth_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "client_error"
    phrase = httpx.codes.get_reason_phrase(status)
    message = f"the endpoint answered {status} {phrase}" + (f": {detail}" if detail else "")
    return TargetError(kind, message, status=status, retry_after=retry_after)


def error_text(body: object) -> str:
    """The readable part of a provider's error body."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:DETAIL_READ_CHARS]
        return json.dumps(body)[:DETAIL_READ_CHARS]
    return str(body)[:DETAIL_READ_CHARS] if body else ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
