"""create_app(), the composition root: the management API under /api/v1 (every entity's
router), /health, the public app at /public, and the process's life (app/bootstrap.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import health, metrics_endpoint
from app.bootstrap import running_process
from app.docs import install_docs
from app.errors import install_error_handlers
from app.middleware import (
    ApiCorsMiddleware,
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    ServerSendApp,
)
from app.openapi import install_openapi
from app.public import create_public_app
from app.webhook_docs import register_webhooks
from database.deps import install_authenticator
from database.evaluations.apis import import_router as test_set_import_router
from database.evaluations.apis import router as metrics_router
from database.evaluations.apis import test_set_router as test_set_metrics_router
from database.models.apis import router as models_router
from database.organizations.apis import router as organizations_router
from database.projects.apis import router as projects_router
from database.projects.webhook_apis import router as webhooks_router
from database.prompts.apis import router as prompts_router
from database.results.apis import baseline_router, results_router
from database.results.apis import router as runs_router
from database.routing import include_flat
from database.test_sets.apis import router as test_sets_router
from database.test_sets.apis import tests_router as tests_bulk_router
from database.tests.apis import router as tests_router
from database.users import service as users_service
from database.users.apis import auth_router, members_router, users_router
from utils import tracing
from utils.config import Settings, get_settings
from utils.logging import configure_logging


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with running_process(settings, workers=settings.workers):
        yield


API_PREFIX = "/api/v1"
PUBLIC_PREFIX = "/public"
API_ROUTERS = (
    auth_router,
    users_router,
    organizations_router,
    members_router,
    projects_router,
    tests_bulk_router,
    tests_router,
    test_sets_router,
    test_set_import_router,
    test_set_metrics_router,
    prompts_router,
    models_router,
    metrics_router,
    runs_router,
    results_router,
    baseline_router,
    webhooks_router,
)


API_DESCRIPTION = """
The management API of Assay: test sets, models, metrics, runs, comparisons and gates.

Authenticate with `Authorization: Bearer <token>`, where the token is an access token from
`auth_login` or `auth_register`, or an API key (`assay_...`, also accepted as `X-API-Key`).
Every error is `application/problem+json` (the `Problem` schema), with the request id.
Live run events are Server-Sent Events under `/public` (their own document:
`/public/openapi.json`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    if tracing.provider() is None:
        tracing.configure(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)
    app = ServerSendApp(
        # Request spans (route templates, mounted apps included) when tracing is on; our own
        # Prometheus metrics instead of OpenTelemetry's.
        telemetry={
            "tracing": tracing.enabled(),
            "tracer_provider": tracing.provider(),
            "metrics": False,
            "logs": False,
            "operation_spans": False,
        },
        title="Assay",
        summary="Test and evaluate LLM applications: test sets, runs, scoring, live results.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from installed assets, no CDN: install_docs below
        redoc_url=None,
    )
    # Added innermost first: the request meets them in the reverse order.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.import_max_bytes + 64 * 1024,  # a form's own bytes beside it
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            ApiCorsMiddleware,
            passes=PUBLIC_PREFIX,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    install_authenticator(
        users_service.authenticate,
        stream_credential_check=users_service.check_stream_credential,
    )
    install_docs(app)
    # Flat: every operation is a route of the app itself (see include_flat), in this order.
    include_flat(app.router, health.router)
    include_flat(app.router, metrics_endpoint.router)
    for router in API_ROUTERS:
        include_flat(app.router, router, prefix=API_PREFIX)
    app.mount(PUBLIC_PREFIX, create_public_app())
    register_webhooks(app)
    install_openapi(app, description=API_DESCRIPTION)
    return app
