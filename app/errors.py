"""The one handler that renders every error as RFC 9457 problem+json (the domain exceptions
themselves live in `utils/errors.py`, below everything that raises them; the body's schema, as
documented, in `utils/problems.py`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.error_fields import located
from utils.errors import AssayError
from utils.problems import PROBLEM_JSON

log = structlog.get_logger(__name__)
DELETED_MEANWHILE = "Something this request names was deleted meanwhile: read it again"
POOL_BUSY_RETRY_SECONDS = 5


def problem(
    request: Request,
    status: int,
    detail: str | None,
    *,
    title: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request.scope.get("state", {}).get("request_id"),
    }
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


# The member of a union pydantic tried (`constrained-str`, `int`, `list[constrained-str]`): it
# names no field. (`[key]`, a mapping's key at fault rather than its value, is kept.)
_UNION_MEMBER = re.compile(
    r"(?:constrained-)?(?:str|int|float|bool|none|bytes|uuid|decimal|date|datetime)"
    r"|(?:list|dict|set|frozenset|tuple|literal|tagged-union|is-instance|json-or-python"
    r"|nullable|union|chain|lax-or-strict|default|model|dataclass|typed-dict"
    r"|function-(?:after|before|wrap|plain))\[.*\]",
    re.DOTALL,
)


def _field_path(loc: Sequence[int | str]) -> str:
    parts = [str(part) for part in loc]
    return ".".join(parts[:1] + [p for p in parts[1:] if not _UNION_MEMBER.fullmatch(p)])


async def _assay_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AssayError)
    errors = located(request, exc.errors) if exc.errors else None
    return problem(
        request, exc.status, exc.detail, title=exc.title, errors=errors, headers=exc.headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    invalid = next((error for error in raw if error.get("type") == "json_invalid"), None)
    if invalid is not None:
        reason = (invalid.get("ctx") or {}).get("error")
        detail = "The request body is not valid JSON" + (f": {reason}" if reason else "")
        return problem(request, 400, detail)
    errors = [
        {"field": _field_path(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in raw
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem(request, 422, f"Invalid request: {summary}", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return problem(request, exc.status_code, str(exc.detail), headers=headers or None)


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def _allowed_methods(request: Request) -> str | None:
    """Every method the API document declares for the path. The router answers a 405 with the
    methods of the first route whose path matched, though other routes serve the same path."""
    app = request.app
    table: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = [
            (
                re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"),
                ", ".join(method.upper() for method in _METHODS if method in item),
            )
            for path, item in app.openapi()["paths"].items()
        ]
        app.state.allowed_methods = table
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    return next((methods for pattern, methods in table if pattern.match(path)), None)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
    if sqlstate.startswith("22"):  # data exception: a value PostgreSQL cannot take
        message = str(exc.orig).split("\n")[0].split(": ", 1)[-1]
        return problem(request, 422, f"A value was not accepted by the database: {message}")
    if sqlstate == "23503":  # what the request names (its project, say) deleted meanwhile
        log.warning("a foreign key refused a request", error=str(exc.orig).split("\n")[0])
        return problem(request, 409, DELETED_MEANWHILE)
    if sqlstate in {"40001", "40P01"}:  # a serialization failure or a deadlock: undone whole
        log.warning("a concurrent change undid a request", error=str(exc.orig).split("\n")[0])
        return problem(
            request, 409, "This request met a concurrent change and was undone: send it again"
        )
    return await _unexpected_error(request, exc)


async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    """Every connection of the pool stayed in use for the pool's whole timeout: the service is
    overloaded, not the request at fault."""
    log.warning("no database connection came free in time", error=str(exc).split("\n")[0])
    return problem(
        request,
        503,
        "The service is busy (no database connection came free in time): try again shortly",
        headers={"Retry-After": str(POOL_BUSY_RETRY_SECONDS)},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(request, 500, "An unexpected error occurred; the request id identifies it")


async def _deleted_meanwhile(request: Request, exc: Exception) -> JSONResponse:
    """A row the request read, then changed, was deleted by another before the change (the
    update matched no row): what a foreign key says of a row deleted under an insert."""
    log.warning("a row changed was deleted meanwhile", error=str(exc).split("\n")[0])
    return problem(request, 409, DELETED_MEANWHILE)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on an app (sub-apps do not inherit them, so each app calls this)."""
    app.add_exception_handler(AssayError, _assay_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _pool_exhausted)
    app.add_exception_handler(StaleDataError, _deleted_meanwhile)
    app.add_exception_handler(Exception, _unexpected_error)
