"""Which timeouts count against a model's circuit breaker: not one under a limit shorter than
the model configuration's own (a run's choice), which neither opens it nor fails its trial;
one at the model's own limit, as any other failure of the model."""

from __future__ import annotations

import pytest

from app.engine.gate import Breaker, Gate, call_through
from providers.targets import TargetError, TargetReply

MODEL_LIMIT = 60.0


async def _timed_out() -> TargetReply:
    raise TargetError("timeout", "no complete answer")


async def _answered() -> TargetReply:
    return TargetReply(output="ok", latency_ms=1.0)


async def _time_out(gate: Gate, time_limit: float | None) -> None:
    with pytest.raises(TargetError, match="no complete answer"):
        await call_through(gate, _timed_out, time_limit=time_limit, model_time_limit=MODEL_LIMIT)


@pytest.mark.parametrize("time_limit", [None, MODEL_LIMIT, MODEL_LIMIT * 2])
async def test_a_timeout_at_the_models_limit_or_longer_opens_the_breaker(time_limit):
    gate = Gate(pace=None, breaker=Breaker(threshold=3, cooldown=60.0))
    for _ in range(3):
        await _time_out(gate, time_limit)
    assert gate.breaker.opened_at is not None


async def test_a_timeout_under_a_shorter_limit_never_opens_the_breaker():
    gate = Gate(pace=None, breaker=Breaker(threshold=3, cooldown=0.0))  # (no wait if open)
    for _ in range(10):
        await _time_out(gate, 0.3)
    assert (gate.breaker.failures, gate.breaker.opened_at) == (0, None)


async def test_a_trial_timing_out_under_a_shorter_limit_leaves_the_next_call_its_trial():
    gate = Gate(pace=None, breaker=Breaker(threshold=1, cooldown=0.0))
    await _time_out(gate, None)  # opens it
    await _time_out(gate, 0.3)  # the trial: says nothing of the model
    assert not gate.breaker.down
    reply = await call_through(gate, _answered, model_time_limit=MODEL_LIMIT)  # the next trial
    assert reply.output == "ok"
    assert (gate.breaker.failures, gate.breaker.opened_at) == (0, None)
