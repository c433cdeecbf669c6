"""create_app(): the management API under /api/v1, /health, and the public app at /public."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import health
from app.config import Settings, get_settings
from app.engine.transport import close_sessions
from app.errors import install_error_handlers
from app.public import create_public_app
from app.runtime import Runtime, set_runtime, tune_garbage_collector
from database.core import Database, set_database
from database.evaluations.apis import router as metrics_router
from database.evaluations.apis import test_set_router as test_set_metrics_router
from database.migrate import runtime_role_rights
from database.models.apis import router as models_router
from database.organizations.apis import router as organizations_router
from database.projects.apis import router as projects_router
from database.prompts.apis import router as prompts_router
from database.results.apis import results_router
from database.results.apis import router as runs_router
from database.setup import prepare_database
from database.test_sets.apis import router as test_sets_router
from database.tests.apis import router as tests_router
from database.users.apis import auth_router, users_router
from notifications.service import Notifications, set_notifications
from tasks.pool import start_workers
from utils.logging import configure_logging
from utils.middleware import BodySizeLimitMiddleware, RequestIdMiddleware, SecurityHeadersMiddleware

log = structlog.get_logger(__name__)


class UnsafeDatabaseRole(RuntimeError):
    """The runtime role could read past row-level security; refusing to serve."""


async def check_runtime_role(database: Database) -> None:
    async with database.engine.connect() as connection:
        rights = await runtime_role_rights(connection)
    if rights.superuser or rights.bypass_rls:
        raise UnsafeDatabaseRole(
            f"ASSAY_DATABASE_URL connects as {rights.name!r}, which is a superuser or has "
            "BYPASSRLS: row-level security would not apply. Use a plain role and put the owner "
            "in ASSAY_MIGRATION_DATABASE_URL."
        )
    if rights.owned_tables:
        log.warning(
            "the runtime role owns the tables; prefer a separate migration role",
            role=rights.name,
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    runtime = Runtime.from_settings(settings)
    urls, _ = await prepare_database(settings)
    database = Database.connect(
        urls.runtime, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    await check_runtime_role(database)
    set_database(database)
    set_runtime(runtime)
    notifications = Notifications(database, urls.runtime, stream_buffer=settings.sse_buffer_events)
    workers = start_workers(settings, database, notifications.listener)
    await notifications.start()
    set_notifications(notifications)
    if workers is not None:
        await workers.start()
    tune_garbage_collector()
    log.info("assay started", embedded_database=settings.embedded, workers=settings.workers)
    try:
        yield
    finally:
        if workers is not None:
            await workers.stop(settings.worker_drain_seconds)
        set_notifications(None)
        await notifications.stop()
        await close_sessions()
        set_runtime(None)
        set_database(None)
        await database.dispose()
        log.info("assay stopped")


def api_router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    api.include_router(auth_router)
    api.include_router(users_router)
    api.include_router(organizations_router)
    for router in (
        projects_router,
        tests_router,
        test_sets_router,
        test_set_metrics_router,
        prompts_router,
        models_router,
        metrics_router,
        runs_router,
        results_router,
    ):
        api.include_router(router)
    return api


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = FastAPI(
        title="Assay",
        summary="Test and evaluate LLM applications: test sets, runs, scoring, live results.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    # Added innermost first: the request meets them in the reverse order.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=max(settings.max_body_bytes, settings.import_max_bytes + 64 * 1024),
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router())
    app.mount("/public", create_public_app())
    return app
