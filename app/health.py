from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from database.core import get_database
from database.migrate import applied_revision, head_revision
from database.routing import api_router

router = api_router(tags=["health"])
DATABASE_CHECK_TIMEOUT = 5.0


class Health(BaseModel):
    status: str
    database: str
    migration_revision: str | None
    migration_head: str | None


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Database unreachable or not migrated"}},
    operation_id="health",
    summary="Database reachability and schema revision",
)
async def health() -> JSONResponse:
    """200 when the database answers and is migrated to the latest revision, else 503."""
    head = head_revision()
    revision = None
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT):
            async with get_database().engine.connect() as connection:
                revision = await applied_revision(connection)
        database = "ok"
    except Exception as exc:  # any failure to reach the database is what this reports
        database = f"unreachable: {type(exc).__name__}"
    healthy = database == "ok" and revision == head
    body = Health(
        status="ok" if healthy else "unavailable",
        database=database,
        migration_revision=revision,
        migration_head=head,
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
