"""Domain exceptions: each carries its HTTP status, and one handler in `app/errors.py` renders
them as RFC 9457 problem+json. Raised anywhere below the app; nothing here knows FastAPI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class AssayError(Exception):
    status: int = 500
    title: str | None = None
    # Most failures roll the transaction back; a few must persist what they did first
    # (revoking a session on refresh-token replay), and say so here.
    keep_changes: bool = False

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers) if headers else None


class InvalidInput(AssayError):
    """The request is well-formed but a field's value is not acceptable."""

    status = 422

    def __init__(self, detail: str, *, field: str | None = None, **kwargs: Any) -> None:
        if field is not None and "errors" not in kwargs:
            kwargs["errors"] = [{"field": field, "message": detail}]
        super().__init__(detail, **kwargs)


class Unauthorized(AssayError):
    status = 401

    def __init__(self, detail: str = "Authentication required", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="assay"'})
        super().__init__(detail, **kwargs)


class Forbidden(AssayError):
    status = 403


class NotFound(AssayError):
    status = 404


class Conflict(AssayError):
    status = 409


class PayloadTooLarge(AssayError):
    status = 413


class UnsupportedMediaType(AssayError):
    status = 415


class RateLimited(AssayError):
    status = 429


class Unavailable(AssayError):
    """The service cannot take this now (it is at capacity): try again later."""

    status = 503
