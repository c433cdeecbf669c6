"""A model's calls are counted (`assay_provider_*`) in the process's current metrics: the
labelled series are looked up once per registry and model, so counting stays right when the
metrics are configured anew and when a call fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.engine.calls import call_model
from providers.targets import TargetConfig, TargetError, TargetRequest
from tests.fakes.openai_server import FakeOpenAI, Fault
from utils import metrics as metrics_module
from utils.metrics import Metrics


@pytest.fixture
def fresh_metrics() -> Iterator[None]:
    metrics_module.configure(None)
    yield
    metrics_module.configure(None)


def _config(fake: FakeOpenAI) -> TargetConfig:
    return TargetConfig(
        id=uuid.uuid4(),
        name="counted",
        provider="openai-compatible",
        model="counted-model",
        base_url=fake.base_url,
        api_key="sk-test",
        parameters={},
        timeout_seconds=10.0,
        requests_per_minute=None,
        input_price_per_mtok=None,
        output_price_per_mtok=None,
    )


def _value(into: Metrics, name: str, **labels: str) -> float:
    found = into.registry.get_sample_value(
        name, {"provider": "openai-compatible", "model": "counted-model", **labels}
    )
    return found or 0.0


@pytest.mark.usefixtures("fresh_metrics")
async def test_calls_count_in_the_registry_in_force_outcomes_and_tokens_included() -> None:
    with FakeOpenAI(require_api_key="sk-test") as fake:
        config = _config(fake)
        first = metrics_module.metrics()
        replies = [
            await call_model(config, TargetRequest(input="hello there"), allow_private=True)
            for _ in range(2)
        ]
        fake.enqueue(Fault.http(400))
        with pytest.raises(TargetError):
            await call_model(config, TargetRequest(input="refused"), allow_private=True)

        assert _value(first, "assay_provider_calls_total", outcome="ok") == 2
        assert _value(first, "assay_provider_calls_total", outcome="4xx") == 1
        assert _value(first, "assay_provider_tokens_total", direction="input") == sum(
            reply.input_tokens or 0 for reply in replies
        )
        assert _value(first, "assay_provider_tokens_total", direction="output") == sum(
            reply.output_tokens or 0 for reply in replies
        )
        assert _value(first, "assay_provider_call_duration_seconds_count") == 3

        second = metrics_module.configure(None)
        await call_model(config, TargetRequest(input="again"), allow_private=True)

    assert _value(second, "assay_provider_calls_total", outcome="ok") == 1
    assert _value(first, "assay_provider_calls_total", outcome="ok") == 2
