"""Traces, exported to memory: a run reads as a trace, from the request that started it down to
each provider call (GenAI semantic conventions, with the run and result ids), the job, and the
database statements. With no collector configured, tracing is off."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.main import create_app
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from utils import tracing

CASES = 3


@pytest.fixture
def exporter(monkeypatch) -> Iterator[InMemorySpanExporter]:
    for name in tracing.STANDARD_ENDPOINTS:
        monkeypatch.delenv(name, raising=False)
    spans = InMemorySpanExporter()
    tracing.configure(None, "assay-test", exporter=spans)
    yield spans
    tracing.shutdown()


@pytest.fixture
async def traced(lab: Lab, exporter, committed_database) -> AsyncIterator[Lab]:
    """The lab, its requests served by an app built while tracing is on, its statements
    traced."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    tracing.instrument_engine(committed_database.engine)
    transport = httpx.ASGITransport(app=create_app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
            lab.client = client
            yield lab
    finally:
        SQLAlchemyInstrumentor().uninstrument()


async def test_a_run_reads_as_a_trace(traced: Lab, exporter, fake: FakeOpenAI) -> None:
    model = await traced.openai_model(fake)
    test_set = await traced.test_set(
        [{"input": f"q{i}", "expected_output": "q"} for i in range(CASES)]
    )
    run = await traced.run(test_set, model, metric_ids=[await traced.metric("contains")])
    done = await traced.wait(run["id"])
    assert done["status"] == "completed", done
    results = {r["id"]: r for r in await traced.results(run["id"])}
    spans = exporter.get_finished_spans()

    requests = [s for s in spans if s.kind == SpanKind.SERVER]
    assert any(
        s.attributes.get("http.route") == "/api/v1/runs" and s.name == "POST /api/v1/runs"
        for s in requests
    ), [s.name for s in requests]

    jobs = [s for s in spans if s.name.startswith("job ")]
    assert jobs and all(s.attributes["assay.run_id"] == run["id"] for s in jobs)

    calls = [s for s in spans if s.kind == SpanKind.CLIENT and s.name.startswith("chat ")]
    assert len(calls) == CASES
    cases = {s.context.span_id: s for s in spans if s.name == "assay.case"}
    for call in calls:
        attributes = call.attributes
        assert call.name == "chat fake-model"
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai-compatible"
        assert attributes["gen_ai.request.model"] == "fake-model"
        assert attributes["server.address"] == "127.0.0.1"  # the host, never the whole URL
        assert attributes["assay.run_id"] == run["id"]
        result = results[attributes["assay.result_id"]]  # the stored result it produced
        assert attributes["gen_ai.usage.input_tokens"] == result["input_tokens"]
        assert attributes["gen_ai.usage.output_tokens"] == result["output_tokens"]
        parent = cases[call.parent.span_id]  # each call sits under its case
        assert parent.attributes["assay.result_id"] == attributes["assay.result_id"]
        assert parent.attributes["assay.status"] == "passed"
    # Each case belongs to a job's trace.
    job_traces = {s.context.trace_id for s in jobs}
    assert {s.context.trace_id for s in cases.values()} <= job_traces

    statements = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert statements, "database statements are spans"
    assert {s.context.trace_id for s in statements} & job_traces


async def test_a_failed_provider_call_is_an_error_span(traced: Lab, exporter, fake) -> None:
    from tests.fakes.server import Fault

    model = await traced.openai_model(fake)
    test_set = await traced.test_set([{"input": "q", "expected_output": "q"}])
    fake.enqueue(Fault.http(400, {"error": {"message": "bad request"}}))
    run = await traced.run(test_set, model, metric_ids=[await traced.metric("contains")])
    await traced.wait(run["id"])
    calls = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    assert len(calls) == 1
    assert calls[0].attributes["error.type"] == "client_error"
    assert calls[0].status.status_code.name == "ERROR"


async def test_a_stream_token_in_the_query_is_not_exported(traced: Lab, exporter) -> None:
    token = "st_secret-stream-token-4b1e"
    response = await traced.client.get(
        f"/public/runs/{uuid.uuid4()}/events", params={"token": token, "x": "1"}
    )
    assert response.status_code in (401, 404)
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.attributes["url.query"] == "token=REDACTED&x=1"
    assert token not in str([dict(s.attributes or {}) for s in exporter.get_finished_spans()])


def test_tracing_is_off_without_a_collector(monkeypatch) -> None:
    for name in tracing.STANDARD_ENDPOINTS:
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure(None, "assay") is None
    assert not tracing.enabled()
    with tracing.span("anything", {"a": 1}) as span:
        assert span is None


def test_the_standard_variables_turn_tracing_on(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    try:
        assert tracing.configure(None, "assay") is not None
        assert tracing.enabled()
    finally:
        tracing.shutdown()
    assert not tracing.enabled()
