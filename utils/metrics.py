"""The process's Prometheus metrics, in one place.

Every process of a host (the API and any `python -m app worker`) writes its samples to files
under one directory (prometheus-client's multiprocess mode, `ASSAY_METRICS_DIR`); the process
that serves `/metrics` reads them all. Files are named by host and process id, so processes of
several containers may share one directory. Without a directory a process keeps its metrics in
memory and reports only its own.

Labels are bounded: routes are templates, providers a fixed set, models a capped set of names,
outcomes and statuses enumerations. No id is ever a label.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import Metric

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_MODEL_LABELS = 100  # distinct model names per process; the rest are reported as "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


def _identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Metrics:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "assay_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "assay_http_request_duration_seconds",
            "Time to answer an HTTP request (streams: their whole life)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cases = Counter(
            "assay_cases",
            "Results recorded by runs, by status (rate() gives cases per second)",
            ["status"],
            registry=r,
        )
        self.provider_calls = Counter(
            "assay_provider_calls",
            "Calls to model providers and endpoints (each attempt), by outcome",
            ["provider", "model", "outcome"],
            registry=r,
        )
        self.provider_duration = Histogram(
            "assay_provider_call_duration_seconds",
            "Duration of one call to a provider",
            ["provider", "model"],
            buckets=PROVIDER_BUCKETS,
            registry=r,
        )
        self.provider_tokens = Counter(
            "assay_provider_tokens",
            "Tokens sent to and received from providers",
            ["provider", "model", "direction"],
            registry=r,
        )
        self.provider_cost = Counter(
            "assay_provider_cost_usd",
            "What provider calls cost, in US dollars (where a price is known)",
            ["provider", "model"],
            registry=r,
        )
        self.breakers_open = Gauge(
            "assay_circuit_breakers_open",
            "Model configurations whose circuit is open in this host's processes",
            ["provider"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.breaker_trips = Counter(
            "assay_circuit_breaker_trips",
            "Times a model's circuit opened",
            ["provider", "model"],
            registry=r,
        )
        self.sse_subscribers = Gauge(
            "assay_sse_subscribers",
            "Live stream subscribers connected",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.sse_dropped = Counter(
            "assay_sse_subscribers_dropped",
            "Subscribers dropped for not keeping up (they reconnect and replay)",
            registry=r,
        )
        self.db_pool_in_use = Gauge(
            "assay_db_pool_connections_in_use",
            "Database connections checked out of the pools",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.db_pool_capacity = Gauge(
            "assay_db_pool_capacity",
            "Connections the pools may open (size plus overflow)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._models: set[str] = set()

    def model_label(self, model: str | None) -> str:
        """A model name as a label: tenants choose names, so the set is capped per process."""
        name = (model or "none")[:80]
        if name in self._models:
            return name
        if len(self._models) >= MAX_MODEL_LABELS:
            return "other"
        self._models.add(name)
        return name

    def render(self, extra: Iterable[Metric] = ()) -> bytes:
        """The exposition text of every process sharing the directory, plus `extra` families
        (the database-wide ones, read at scrape time)."""
        if self.directory is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(self.directory))
        else:
            registry = self.registry
        text = generate_latest(registry)
        snapshot = CollectorRegistry()
        snapshot.register(_Fixed(list(extra)))
        return text + generate_latest(snapshot)

    def close(self) -> None:
        """The process ends: its live gauges stop counting (its counters stay, as they must)."""
        if self.directory is not None:
            multiprocess.mark_process_dead(_identity(), str(self.directory))


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


_current: Metrics | None = None


def configure(directory: Path | None, *, forget_siblings: bool = False) -> Metrics:
    """The process's metrics, written under `directory` (shared with the host's other
    processes) or kept in memory. Call once at start, before any sample is taken.
    `forget_siblings`: the directories beside it are of earlier boots, and go."""
    global _current
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        if forget_siblings:
            for sibling in directory.parent.iterdir():
                if sibling != directory and sibling.is_dir():
                    shutil.rmtree(sibling, ignore_errors=True)
        _forget_dead_processes(directory)
        _forget_own_files(directory)
        os.environ[MULTIPROC_ENV] = str(directory)
        values.ValueClass = values.MultiProcessValue(process_identifier=_identity)
    else:
        os.environ.pop(MULTIPROC_ENV, None)
        values.ValueClass = values.MutexValue
    _current = Metrics(directory)
    return _current


def metrics() -> Metrics:
    global _current
    if _current is None:
        _current = Metrics(None)
    return _current


def _forget_dead_processes(directory: Path) -> None:
    """Live gauges of this host's processes that died without saying so (killed) would count
    for ever: their files go. Counters stay, so totals never run backwards."""
    host = socket.gethostname()
    for path in directory.glob(f"gauge_live*_{host}-*.db"):
        pid = path.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _forget_own_files(directory: Path) -> None:
    """Files named like this process are an earlier process's that had the same host name and
    id (a restarted container is process 1 again): starting from its values would be wrong."""
    for path in directory.glob(f"*_{_identity()}.db"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
