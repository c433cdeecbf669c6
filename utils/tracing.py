"""OpenTelemetry traces, off unless a collector is configured (`ASSAY_OTEL_EXPORTER_OTLP_ENDPOINT`,
or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).

When on: a span per HTTP request (FastAPI's own telemetry, given this provider), per database
statement (SQLAlchemy's instrumentation), per job, per case of a run and per provider call
(GenAI semantic conventions). When off, `span()` costs a truth test: no context is entered.
The provider is the process's own, never the global one, so a test can trace into memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

STANDARD_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Query parameters that carry credentials (a stream token travels as ?token=).
SECRET_PARAMETERS = re.compile(r"(?i)(^|&)(token|access_token|api_key|key)=[^&]*")

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def configure(
    endpoint: str | None, service_name: str, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Turns tracing on when there is somewhere to send spans: `endpoint` (an OTLP/HTTP
    collector's base URL), a standard OTEL_* variable, or (tests) an `exporter`."""
    global _provider, _tracer
    shutdown()
    if exporter is None and not endpoint and not any(os.environ.get(n) for n in STANDARD_ENDPOINTS):
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(RedactingProcessor())  # first: before any export sees it
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # An explicit endpoint is the full URL; the standard variables are read by the
        # exporter itself (which adds /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT).
        otlp = OTLPSpanExporter(endpoint=_traces_url(endpoint)) if endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(otlp))
    _provider = provider
    _tracer = provider.get_tracer("assay")
    return provider


class RedactingProcessor(SpanProcessor):
    """Credentials in a request's query (`url.query`, recorded as the span starts) are
    replaced before the span can be exported."""

    def on_start(self, span: SdkSpan, parent_context: Any = None) -> None:
        query = (span.attributes or {}).get("url.query")
        if isinstance(query, str) and SECRET_PARAMETERS.search(query):
            span.set_attribute("url.query", SECRET_PARAMETERS.sub(r"\1\2=REDACTED", query))


def _traces_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def provider() -> TracerProvider | None:
    return _provider


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Sends what is buffered and turns tracing off."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


@contextmanager
def _span(name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> Iterator[Span]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        name, kind=kind, attributes={k: v for k, v in attributes.items() if v is not None}
    ) as span:
        yield span


def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> Any:
    """A span around the block when tracing is on (None attributes are left out); a context
    manager yielding None when it is off."""
    if _tracer is None:
        return nullcontext(None)
    return _span(name, kind, attributes or {})


def failed(active: Span | None, error_type: str, message: str) -> None:
    if active is not None:
        active.set_attribute("error.type", error_type)
        active.set_status(Status(StatusCode.ERROR, message))


def instrument_engine(engine: Any) -> None:
    """Database statements as spans (an AsyncEngine or a sync one), when tracing is on."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The instrumentation declares SQLAlchemy < 2.1; its engine events are the same in 2.1
    # (tests/database/results/test_tracing.py checks the spans arrive).
    SQLAlchemyInstrumentor().instrument(
        engine=getattr(engine, "sync_engine", engine),
        tracer_provider=_provider,
        skip_dep_check=True,
    )
