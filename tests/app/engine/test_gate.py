"""The gate toward a model: pace, retries honouring Retry-After, and the circuit breaker.
The schedule shared between processes is tested in test_pacing.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from app.engine import gate as gate_module
from app.engine.gate import MAX_RETRIES, Breaker, Gate, call_through, gate_for, retry_delay
from app.engine.pacing import LATE_FLOOR_SECONDS, Pace, SharedPace, keep_to_a_slot
from database.core import Database
from providers.targets import TargetError, TargetReply
from tests.app.engine.spacing import (
    assert_an_overslept_call_takes_the_next_free_slot,
    assert_each_call_waits_for_its_slot,
)
from utils.metrics import metrics

REPLY = TargetReply(output="ok", latency_ms=1.0)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(gate_module, "RETRY_BASE_SECONDS", 0.001)


class Scripted:
    """A target call that raises the scripted errors in order, then answers."""

    def __init__(self, *errors: BaseException | None) -> None:
        self.script = list(errors)
        self.calls = 0

    async def __call__(self) -> TargetReply:
        self.calls += 1
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error
        return REPLY


def failing(kind: str) -> Callable[[], Awaitable[TargetReply]]:
    async def call() -> TargetReply:
        raise TargetError(kind, f"{kind} happened")  # type: ignore[arg-type]

    return call


def bare_gate(threshold: int = 100, cooldown: float = 60.0) -> Gate:
    return Gate(pace=None, breaker=Breaker(threshold=threshold, cooldown=cooldown))


# --- pace --------------------------------------------------------------------------------------


def test_pace_interval_follows_the_limit():
    assert Pace(600).interval == pytest.approx(0.1)
    assert Pace(60).interval == pytest.approx(1.0)


async def test_pace_spaces_sequential_calls():
    pace = Pace(600)
    started = time.monotonic()
    for _ in range(4):
        await pace.wait()
    assert time.monotonic() - started >= 3 * 0.1 * 0.9


async def test_pace_spaces_concurrent_calls_without_a_burst():
    pace = Pace(1200)  # 0.05 s apart
    stamps: list[float] = []

    async def one() -> None:
        await pace.wait()
        stamps.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(5)))
    assert_each_call_waits_for_its_slot(stamps, started, 0.05)


async def test_a_call_that_oversleeps_its_slot_takes_another(monkeypatch: pytest.MonkeyPatch):
    pace = Pace(150)  # 0.4 s apart
    await assert_an_overslept_call_takes_the_next_free_slot(pace, monkeypatch)


def slots_answering_after(seconds: float) -> tuple[Callable[[], Awaitable[float]], list[float]]:
    """A schedule whose every slot is now, its answer coming back `seconds` later (a slow
    database, or a loop stalled meanwhile); and the times it was asked."""
    asked: list[float] = []

    async def take_slot() -> float:
        asked.append(time.monotonic())
        await asyncio.sleep(seconds)
        return 0.0

    return take_slot, asked


async def test_at_a_high_rate_a_little_lag_keeps_the_slot():
    # 6,000 a minute: half an interval is 5 ms, less than a busy loop's usual lag.
    take_slot, asked = slots_answering_after(LATE_FLOOR_SECONDS / 5)
    await keep_to_a_slot(take_slot, 0.01)
    assert len(asked) == 1


async def test_an_overslept_slot_is_taken_again_once_only():
    take_slot, asked = slots_answering_after(LATE_FLOOR_SECONDS * 2)
    await keep_to_a_slot(take_slot, 0.01)
    assert len(asked) == 2  # late again, the call goes rather than wait on


async def test_the_first_call_is_not_delayed():
    pace = Pace(1)  # one a minute: only the first may go at once
    started = time.monotonic()
    await pace.wait()
    assert time.monotonic() - started < 1.0


def test_gate_for_shares_one_gate_per_model_and_limit():
    model = uuid.uuid4()
    first = gate_for(model, 600)
    assert gate_for(model, 600) is first
    assert isinstance(first.pace, SharedPace)
    assert first.pace.model_id == model and first.pace.interval == pytest.approx(0.1)
    first.breaker.failures = 3
    changed = gate_for(model, 60)
    assert changed is not first and changed.pace is not None
    # The breaker is the model's: a changed limit keeps what it knows of the model's health.
    assert changed.breaker is first.breaker and changed.breaker.failures == 3
    assert gate_for(model, None).pace is None
    assert gate_for(uuid.uuid4(), 600) is not first
    assert gate_for(uuid.uuid4(), 600).breaker is not first.breaker


async def test_call_through_waits_for_the_pace():
    gate = Gate(pace=Pace(600), breaker=Breaker())
    call = Scripted()
    started = time.monotonic()
    for _ in range(3):
        assert await call_through(gate, call) is REPLY
    assert call.calls == 3
    assert time.monotonic() - started >= 2 * 0.1 * 0.9


async def test_gates_of_two_processes_pace_one_model_together(database: Database):
    """This process's gate and the pace another process would build for the same model and
    limit take turns: six calls on one schedule 0.1 s apart, not two at a time."""
    model = uuid.uuid4()
    here, elsewhere = gate_for(model, 600), Gate(pace=SharedPace(model, 600))
    stamps: list[float] = []

    async def calls(gate: Gate) -> None:
        async def call() -> TargetReply:
            stamps.append(time.monotonic())
            return REPLY

        for _ in range(3):
            assert await call_through(gate, call) is REPLY

    started = time.monotonic()
    await asyncio.gather(calls(here), calls(elsewhere))
    assert len(stamps) == 6
    assert_each_call_waits_for_its_slot(stamps, started, 0.1)


# --- retries -----------------------------------------------------------------------------------


async def test_rate_limit_is_retried_after_retry_after():
    call = Scripted(TargetError("rate_limited", "slow down", status=429, retry_after=0.05))
    started = time.monotonic()
    assert await call_through(bare_gate(), call) is REPLY
    assert call.calls == 2
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("kind", ["rate_limited", "server_error", "connection_error"])
async def test_retryable_errors_are_retried_then_succeed(kind):
    call = Scripted(TargetError(kind, "one"), TargetError(kind, "two"))
    gate = bare_gate()
    assert await call_through(gate, call) is REPLY
    assert call.calls == 3
    assert gate.breaker.failures == 0  # a success resets the count


@pytest.mark.parametrize("kind", ["rate_limited", "server_error", "connection_error"])
async def test_retryable_errors_give_up_after_max_retries(kind):
    call = Scripted(*(TargetError(kind, f"attempt {i}") for i in range(10)))
    with pytest.raises(TargetError) as caught:
        await call_through(bare_gate(), call)
    assert caught.value.kind == kind
    assert caught.value.message == f"attempt {MAX_RETRIES}"  # the last error is raised
    assert call.calls == MAX_RETRIES + 1


@pytest.mark.parametrize(
    "kind", ["timeout", "client_error", "auth_error", "invalid_response", "configuration_error"]
)
async def test_other_errors_are_not_retried(kind):
    call = Scripted(TargetError(kind, "no"))
    with pytest.raises(TargetError) as caught:
        await call_through(bare_gate(), call)
    assert caught.value.kind == kind
    assert call.calls == 1


def test_retry_delay_honours_retry_after_up_to_the_maximum():
    assert retry_delay(TargetError("rate_limited", "x", retry_after=2.5), 0) == 2.5
    assert retry_delay(TargetError("rate_limited", "x", retry_after=10_000), 3) == (
        gate_module.RETRY_MAX_SECONDS
    )


def test_retry_delay_backs_off_exponentially_with_jitter(monkeypatch):
    monkeypatch.setattr(gate_module, "RETRY_BASE_SECONDS", 0.5)
    error = TargetError("server_error", "x")
    for attempt in range(4):
        base = 0.5 * 2**attempt
        for _ in range(20):
            assert base * 0.5 <= retry_delay(error, attempt) <= base * 1.5
    assert retry_delay(error, 30) <= gate_module.RETRY_MAX_SECONDS * 1.5


# --- circuit breaker ---------------------------------------------------------------------------


async def _fail(gate: Gate, kind: str = "timeout") -> None:
    with pytest.raises(TargetError) as caught:
        await call_through(gate, failing(kind))
    assert caught.value.kind == kind


async def test_a_breaker_known_down_refuses_calls_without_calling_the_model():
    """Open after the threshold, and its trial failed too: the model is down."""
    gate = bare_gate(threshold=2, cooldown=0.1)
    await _fail(gate)
    await _fail(gate)
    await _fail(gate)  # waits for the cooldown: the trial, which fails
    assert gate.breaker.down
    call = Scripted()
    with pytest.raises(TargetError) as caught:
        await call_through(gate, call)
    assert caught.value.kind == "circuit_open"
    assert call.calls == 0


async def test_calls_wait_out_a_first_opening_and_go_on_once_the_trial_succeeds():
    """A burst of failures (every lane of a run failing at once) opens the breaker before any
    retry: the calls then waiting are not failed, but wait for the trial, which closes it."""
    gate = bare_gate(threshold=2, cooldown=0.2)
    await _fail(gate)
    await _fail(gate)
    started = time.monotonic()
    calls = [Scripted() for _ in range(5)]
    replies = await asyncio.gather(*(call_through(gate, call) for call in calls))
    assert replies == [REPLY] * 5 and [call.calls for call in calls] == [1] * 5
    assert time.monotonic() - started >= 0.2  # none called before the cooldown
    assert gate.breaker.opened_at is None and not gate.breaker.down


async def test_calls_waiting_on_a_first_opening_are_refused_once_its_trial_fails():
    gate = bare_gate(threshold=1, cooldown=0.1)
    await _fail(gate)
    release = asyncio.Event()

    async def failing_trial() -> TargetReply:
        await release.wait()
        raise TargetError("server_error", "still down")

    trial = asyncio.create_task(call_through(gate, failing_trial))
    await asyncio.sleep(0.15)  # the trial is in flight
    waiting = [Scripted() for _ in range(3)]
    waiters = [asyncio.create_task(call_through(gate, call)) for call in waiting]
    await asyncio.sleep(0.05)
    assert not any(waiter.done() for waiter in waiters)
    release.set()
    with pytest.raises(TargetError):
        await trial
    for waiter in waiters:
        with pytest.raises(TargetError) as caught:
            await waiter
        assert caught.value.kind == "circuit_open"
    assert [call.calls for call in waiting] == [0, 0, 0]


async def test_breaker_stays_closed_below_the_threshold_and_a_success_resets_it():
    gate = bare_gate(threshold=2, cooldown=60)
    await _fail(gate)
    assert await call_through(gate, Scripted()) is REPLY
    await _fail(gate)  # one failure in a row again: still closed
    assert await call_through(gate, Scripted()) is REPLY


@pytest.mark.parametrize("kind", ["client_error", "auth_error"])
async def test_client_side_errors_do_not_trip_the_breaker(kind):
    gate = bare_gate(threshold=2, cooldown=60)
    for _ in range(3):
        await _fail(gate, kind)
    assert await call_through(gate, Scripted()) is REPLY


async def test_retries_count_toward_the_breaker():
    gate = bare_gate(threshold=2, cooldown=0.1)
    call = Scripted(*(TargetError("server_error", "down") for _ in range(10)))
    with pytest.raises(TargetError) as caught:
        await call_through(gate, call)
    # Two failures open the circuit; the third attempt waits for the cooldown and is the
    # trial, which fails: the fourth is refused before calling.
    assert caught.value.kind == "circuit_open"
    assert call.calls == 3


def _breaker_figures(provider: str, model: str) -> tuple[float, float]:
    """Open circuits and trips as /metrics reports them."""
    registry = metrics().registry
    opened = registry.get_sample_value("assay_circuit_breakers_open", {"provider": provider})
    trips = registry.get_sample_value(
        "assay_circuit_breaker_trips_total", {"provider": provider, "model": model}
    )
    return opened or 0.0, trips or 0.0


async def test_breaker_half_opens_after_the_cooldown_and_closes_on_success():
    breaker = Breaker(threshold=2, cooldown=0.1, provider="groq", model="breaker-model")
    gate = Gate(pace=None, breaker=breaker)
    opened, trips = _breaker_figures("groq", "breaker-model")
    await _fail(gate)
    await _fail(gate)
    assert _breaker_figures("groq", "breaker-model") == (opened + 1, trips + 1)
    await asyncio.sleep(0.12)
    call = Scripted()
    assert await call_through(gate, call) is REPLY
    assert call.calls == 1
    assert gate.breaker.opened_at is None and gate.breaker.failures == 0
    assert _breaker_figures("groq", "breaker-model") == (opened, trips + 1)
    assert await call_through(gate, call) is REPLY  # closed: calls flow again
    assert call.calls == 2


async def test_a_failed_trial_reopens_the_breaker():
    gate = Gate(pace=None, breaker=Breaker(threshold=2, cooldown=0.1))
    await _fail(gate)
    await _fail(gate)
    await asyncio.sleep(0.12)
    await _fail(gate)  # the trial call goes through, and fails
    call = Scripted()
    with pytest.raises(TargetError, match="failed 3 times") as caught:
        await call_through(gate, call)
    assert caught.value.kind == "circuit_open"
    assert call.calls == 0
    await asyncio.sleep(0.12)
    assert await call_through(gate, call) is REPLY  # a later trial may still close it


async def test_only_one_trial_goes_through_while_half_open():
    gate = Gate(pace=None, breaker=Breaker(threshold=1, cooldown=0.05))
    await _fail(gate)
    await asyncio.sleep(0.07)
    release = asyncio.Event()
    calls = 0

    async def slow() -> TargetReply:
        nonlocal calls
        calls += 1
        await release.wait()
        return REPLY

    trial = asyncio.create_task(call_through(gate, slow))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(call_through(gate, slow))
    await asyncio.sleep(0.25)
    assert calls == 1 and not waiting.done()  # it waits for the trial's verdict
    release.set()
    assert await trial is REPLY
    assert await waiting is REPLY
    assert calls == 2


async def test_a_cancelled_trial_does_not_leave_the_breaker_open_for_ever():
    """A run cancelled while its trial call is in flight must not wedge the (process-wide)
    gate: once the cooldown has passed again, another trial goes through."""
    gate = Gate(pace=None, breaker=Breaker(threshold=1, cooldown=0.05))
    await _fail(gate)
    await asyncio.sleep(0.07)

    async def hangs() -> TargetReply:
        await asyncio.sleep(10)
        return REPLY

    trial = asyncio.create_task(call_through(gate, hangs))
    await asyncio.sleep(0.01)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    await asyncio.sleep(0.07)
    assert await call_through(gate, Scripted()) is REPLY


@pytest.mark.parametrize(
    "outcome",
    [TargetError("client_error", "bad request", status=400), RuntimeError("a bug")],
    ids=["client_error", "unexpected"],
)
async def test_a_trial_ending_without_a_verdict_lets_a_later_trial_through(outcome):
    gate = Gate(pace=None, breaker=Breaker(threshold=1, cooldown=0.05))
    await _fail(gate)
    await asyncio.sleep(0.07)
    with pytest.raises(type(outcome)):
        await call_through(gate, Scripted(outcome))
    call = Scripted()
    assert await call_through(gate, call) is REPLY
    assert call.calls == 1
    assert gate.breaker.opened_at is None


async def test_a_trial_failing_after_the_breaker_closed_leaves_the_next_opening_its_wait():
    """An older call's success closed the breaker while its trial was in flight; the trial's
    failure then marked it down, closed: the next opening refused its calls at once."""
    gate = Gate(pace=None, breaker=Breaker(threshold=2, cooldown=0.1))
    older_answers, trial_answers = asyncio.Event(), asyncio.Event()

    async def older() -> TargetReply:
        await older_answers.wait()
        return REPLY

    async def failing_trial() -> TargetReply:
        await trial_answers.wait()
        raise TargetError("timeout", "no answer")

    in_flight = asyncio.create_task(call_through(gate, older))  # admitted while closed
    await asyncio.sleep(0)
    await _fail(gate)
    await _fail(gate)
    await asyncio.sleep(0.12)
    trial = asyncio.create_task(call_through(gate, failing_trial))
    await asyncio.sleep(0.01)
    older_answers.set()
    assert await in_flight is REPLY  # the breaker closes
    trial_answers.set()
    with pytest.raises(TargetError):
        await trial
    assert not gate.breaker.down
    await _fail(gate)  # a new opening (two in a row, counting the trial's)
    call = Scripted()
    assert await call_through(gate, call) is REPLY  # waited for its own trial
    assert call.calls == 1


async def test_a_trial_of_an_earlier_opening_says_nothing_of_a_later_one():
    """Closed by another call's success and opened again while its trial was in flight: the
    trial's failure marked the new opening down (its calls refused at once), or its end let a
    second trial of the new opening through."""
    breaker = Breaker(threshold=2, cooldown=0.05)
    breaker.failed(trial=None)
    breaker.failed(trial=None)
    await asyncio.sleep(0.06)
    earlier = await breaker.admit()
    assert earlier is not None
    breaker.succeeded()  # an older call's answer
    breaker.failed(trial=None)
    breaker.failed(trial=None)  # open again
    await asyncio.sleep(0.06)
    later = await breaker.admit()
    assert later is not None and later != earlier
    breaker.failed(trial=earlier)
    assert not breaker.down
    breaker.abandoned(earlier)
    waiting = asyncio.create_task(breaker.admit())
    await asyncio.sleep(0.15)
    assert not waiting.done()  # the later opening's trial is still under way: one at a time
    breaker.succeeded()
    assert await waiting is None
