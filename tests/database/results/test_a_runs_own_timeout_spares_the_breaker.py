"""The circuit breaker is the model configuration's, shared by every run in the process: a
timeout under a run's own `timeout_seconds`, shorter than the model's, is that run's choice and
does not count against it (else one impatient run would stop every other run of a healthy
model with `circuit_open`). A timeout at the model's own limit still does."""

from __future__ import annotations

import uuid

import pytest

from app.engine.gate import BREAKER_THRESHOLD, Breaker, gate_for
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow


def _breaker(model_id: str) -> Breaker:
    return gate_for(uuid.UUID(model_id), None).breaker  # (the gate the runs made)


async def _error_types(lab: Lab, run_id: str) -> list[str | None]:
    return [r["error_type"] for r in await lab.results(run_id)]


async def test_timeouts_under_a_runs_shorter_limit_leave_other_runs_calling(
    lab: Lab, fake: FakeOpenAI
):
    fake.latency = 1.0
    target = await lab.openai_model(fake)  # the model's own timeout: 60 s
    metric = await lab.any_answer()
    impatient = await lab.run(
        await lab.test_set([{"input": f"slow {i}"} for i in range(BREAKER_THRESHOLD)]),
        target,
        metric_ids=[metric],
        concurrency=1,
        timeout_seconds=0.2,
    )
    await lab.wait(impatient["id"])
    assert await _error_types(lab, impatient["id"]) == ["timeout"] * BREAKER_THRESHOLD
    breaker = _breaker(target)
    assert (breaker.failures, breaker.opened_at) == (0, None)

    fake.latency = 0.0
    patient = await lab.run(
        await lab.test_set([{"input": f"quick {i}"} for i in range(3)]), target, metric_ids=[metric]
    )
    done = await lab.wait(patient["id"])
    assert done["counts"]["passed"] == 3, await _error_types(lab, patient["id"])


async def test_timeouts_at_the_models_own_limit_count(lab: Lab, fake: FakeOpenAI):
    fake.latency = 1.0
    target = await lab.openai_model(fake, timeout_seconds=0.2)
    test_set = await lab.test_set([{"input": f"slow {i}"} for i in range(2)])
    metric = await lab.any_answer()
    # Without a limit of its own, and with one no shorter than the model's: 4 failures in a
    # row, one short of opening it (an open breaker would hold calls for its cooldown).
    assert BREAKER_THRESHOLD > 4
    for run_limit in ({}, {"timeout_seconds": 0.2}):
        run = await lab.run(test_set, target, metric_ids=[metric], concurrency=1, **run_limit)
        await lab.wait(run["id"])
        assert await _error_types(lab, run["id"]) == ["timeout"] * 2
    assert _breaker(target).failures == 4
