"""Health for people and orchestrators: `/health` (the database, migrated), `/health/live`
(the process answers: restart it when this fails) and `/health/ready` (send it traffic: the
database migrated, its LISTEN connection up, its workers running when it has any)."""

from __future__ import annotations

import asyncio
from typing import Literal

import asyncpg
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from database.core import get_database
from database.revisions import head_revision, serves_revision
from database.routing import ProbeRoute, api_router
from notifications.service import get_notifications
from tasks.worker import started_pools

router = api_router(tags=["health"], route_class=ProbeRoute)
DATABASE_CHECK_TIMEOUT = 5.0


class Health(BaseModel):
    status: str
    database: str
    migration_revision: str | None
    migration_head: str | None


class Live(BaseModel):
    status: Literal["ok"]


class Ready(Health):
    listener: Literal["connected", "down", "not started"] = Field(
        description="The LISTEN connection that wakes workers and live streams"
    )
    workers: Literal["running", "stopped", "none"] = Field(
        description="none: an API-only process (ASSAY_WORKERS=0)"
    )


async def _database() -> Health:
    head = head_revision()
    revision = None
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT):
            async with get_database().engine.connect() as connection:
                driver = (await connection.get_raw_connection()).driver_connection
                revision = await _applied_revision(driver)
        database = "ok"
    except Exception as exc:  # any failure to reach the database is what this reports
        database = f"unreachable: {type(exc).__name__}"
    healthy = database == "ok" and serves_revision(revision)
    return Health(
        status="ok" if healthy else "unavailable",
        database=database,
        migration_revision=revision,
        migration_head=head,
    )


async def _applied_revision(driver: asyncpg.Connection) -> str | None:
    """The applied revision (None before the first migration), in one statement on the
    driver's connection and outside a transaction: one round trip, no BEGIN or ROLLBACK."""
    try:
        revision: str | None = await driver.fetchval(_APPLIED_REVISION)
    except asyncpg.UndefinedTableError:
        return None
    return revision


_APPLIED_REVISION = "SELECT version_num FROM alembic_version LIMIT 1"


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Database unreachable or not migrated"}},
    operation_id="health",
    summary="Database reachability and schema revision",
)
async def health() -> JSONResponse:
    """200 when the database answers and is migrated to this release's latest revision (or a
    later release's), else 503."""
    found = await _database()
    return JSONResponse(found.model_dump(), status_code=200 if found.status == "ok" else 503)


@router.get(
    "/health/live",
    response_model=Live,
    operation_id="health_live",
    summary="Liveness: the process answers (no dependency is checked)",
)
async def live() -> Live:
    """An orchestrator restarts the process when this fails; nothing outside it is asked, so
    a database outage does not restart every process at once."""
    return Live(status="ok")


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "Not ready: the failing parts say why"}},
    operation_id="health_ready",
    summary="Readiness: database migrated, LISTEN connection up, workers running",
)
async def ready() -> JSONResponse:
    """200 when the process can do its work: the database answers and is migrated, its one
    LISTEN connection is up, and its workers (if it has any) are running; else 503."""
    found = await _database()
    try:
        listener = "connected" if get_notifications().listener.connected.is_set() else "down"
    except RuntimeError:  # notifications are not started in this process
        listener = "not started"
    pools = started_pools()
    workers = "none" if not pools else "running" if all(p.running for p in pools) else "stopped"
    ok = found.status == "ok" and listener == "connected" and workers != "stopped"
    body = Ready(
        **{**found.model_dump(), "status": "ok" if ok else "unavailable"},
        listener=listener,
        workers=workers,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
