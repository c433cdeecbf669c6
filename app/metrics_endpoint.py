"""`GET /metrics`: Prometheus exposition of every process on this host (see utils/metrics.py)
plus the database-wide figures, for a scraper holding the scrape token.

The token (`ASSAY_METRICS_TOKEN`, sent as `Authorization: Bearer ...`) keeps the figures
private on the public port without a second listener; with no token the endpoint is off (404),
so nothing is exposed by default.
"""

from __future__ import annotations

import asyncio
import hmac

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric

from database.core import get_database
from tasks import snapshot
from utils.config import get_settings
from utils.errors import NotFound, Unauthorized
from utils.metrics import metrics

router = APIRouter(include_in_schema=False)
log = structlog.get_logger(__name__)
SNAPSHOT_TIMEOUT = 5.0

FAMILIES = {
    "runs": ("assay_runs", "Runs by status (every organization)", "status"),
    "jobs_ready": ("assay_jobs_ready", "Jobs ready to run, by kind", "kind"),
    "jobs_oldest_ready_seconds": (
        "assay_jobs_oldest_ready_age_seconds",
        "How long the oldest ready job has waited, by kind",
        "kind",
    ),
    "jobs_running": ("assay_jobs_running", "Jobs being run, by kind", "kind"),
    "jobs_dead": ("assay_jobs_dead", "Jobs that gave up for good, by kind", "kind"),
}


@router.get("/metrics")
async def scrape(request: Request) -> Response:
    token = get_settings().metrics_token
    if not token:
        raise NotFound("Metrics are off: set ASSAY_METRICS_TOKEN to scrape them")
    sent = request.headers.get("authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise Unauthorized("A scrape needs `Authorization: Bearer <ASSAY_METRICS_TOKEN>`")
    figures = await _database_figures()
    # Reading every process's files and rendering them is file work: off the event loop.
    text = await asyncio.to_thread(metrics().render, figures)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def _database_figures() -> list[Metric]:
    families = {
        key: GaugeMetricFamily(name, doc, labels=[label])
        for key, (name, doc, label) in FAMILIES.items()
    }
    up = GaugeMetricFamily("assay_database_up", "Whether the scrape could read the database")
    try:
        async with asyncio.timeout(SNAPSHOT_TIMEOUT):
            async with get_database().engine.connect() as connection:
                figures = await snapshot.read(connection)
    except Exception as exc:  # the scrape still reports this process's own figures
        log.warning("metrics snapshot failed", error=type(exc).__name__)
        up.add_metric([], 0)
        return [up]
    for figure in figures:
        family = families.get(figure.metric)
        if family is not None:
            family.add_metric([figure.label], figure.value)
    up.add_metric([], 1)
    return [up, *families.values()]
