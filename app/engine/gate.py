"""What stands between the engine and a model: a requests-per-minute pace shared by every
process on the database (app/engine/pacing.py), retries on 429/5xx/connection errors (honouring
Retry-After), and a circuit breaker.

The circuit breaker is kept per process, on purpose. Each process learns that a model is down
within BREAKER_THRESHOLD of its own calls (seconds, at any useful rate), so sharing would save
a handful of failed calls at most, while it would add a database round trip to every call,
success or not, to read and update the failure count. And a shared open state is worse when it
is wrong: one process whose network path to the provider is broken would stop every process,
and an open state left by a process that died mid-trial would hold them all off for its
cooldown. Per process, a breaker reflects what that process actually sees.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.engine.pacing import Pacer, SharedPace
from providers.targets import TargetError, TargetReply
from utils.metrics import metrics

RETRYABLE = frozenset({"rate_limited", "server_error", "connection_error"})
# A 429 is the provider pacing us, not failing: it is retried but does not open the circuit.
BREAKER_KINDS = frozenset({"server_error", "connection_error", "timeout"})
MAX_RETRIES = 3
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN_SECONDS = 30.0
TRIAL_POLL_SECONDS = 0.1  # how often a call waiting on the trial looks for its verdict


@dataclass
class Breaker:
    """Opens after consecutive failures; lets one trial call through after the cooldown.

    While it is open on a first run of failures, calls wait for the trial's verdict: a burst
    of errors from a provider that is back a moment later (every lane of a run failing at once
    opens it before any retry) costs a cooldown, not every case in it. Once a trial has failed
    too, the model is down: calls are refused at once until a trial succeeds."""

    threshold: int = BREAKER_THRESHOLD
    cooldown: float = BREAKER_COOLDOWN_SECONDS
    failures: int = 0
    opened_at: float | None = None
    down: bool = False  # a trial has failed since it opened
    openings: int = 0  # how often it has opened: a trial is of one opening
    _trial: bool = field(default=False, repr=False)
    provider: str = "unknown"  # for the metrics of its state
    model: str | None = None

    async def admit(self) -> int | None:
        """Waits while open and not known down; raises `circuit_open` once known down. When
        this call is the half-open trial, the opening it is the trial of."""
        while self.opened_at is not None:
            waited = time.monotonic() - self.opened_at
            if waited >= self.cooldown and not self._trial:
                self._trial = True
                return self.openings
            if self.down:
                raise TargetError(
                    "circuit_open",
                    f"the model failed {self.failures} times in a row; not calling it for "
                    f"{max(0.0, self.cooldown - waited):.0f} s more",
                )
            await asyncio.sleep(max(self.cooldown - waited, TRIAL_POLL_SECONDS))
        return None

    def abandoned(self, trial: int) -> None:
        """The trial ended without a verdict (cancelled, or an error that says nothing of the
        model's health): the next call after the cooldown may try again."""
        if trial == self.openings:  # (a later opening's trial is its own)
            self._trial = False

    def succeeded(self) -> None:
        if self.opened_at is not None:
            metrics().breakers_open.labels(self.provider).dec()
        self.failures, self.opened_at, self.down, self._trial = 0, None, False, False

    def failed(self, *, trial: int | None) -> None:
        """A failure; `trial`: the opening whose trial it was, if it was one."""
        self.failures += 1
        if trial == self.openings and self.opened_at is not None:
            # The trial of this opening: the model is down. (A trial whose opening another
            # call's success closed meanwhile says nothing of a later opening.)
            self.down, self._trial = True, False
        if self.failures >= self.threshold:
            if self.opened_at is None:
                self.openings += 1
                into = metrics()
                into.breakers_open.labels(self.provider).inc()
                into.breaker_trips.labels(self.provider, into.model_label(self.model)).inc()
            self.opened_at = time.monotonic()


@dataclass
class Gate:
    pace: Pacer | None
    breaker: Breaker = field(default_factory=Breaker)


_gates: dict[tuple[uuid.UUID, int | None], Gate] = {}


def gate_for(
    model_id: uuid.UUID,
    requests_per_minute: int | None,
    *,
    provider: str = "unknown",
    model: str | None = None,
) -> Gate:
    """One gate per model configuration and limit in a process (a changed limit makes a new
    one); its pace is the schedule every process shares for that model and limit. The
    breaker is the model's, whatever the limit: a new limit takes over the old one's."""
    key = (model_id, requests_per_minute)
    gate = _gates.get(key)
    if gate is None:
        earlier = [k for k in _gates if k[0] == model_id]
        breaker = (
            _gates[earlier[-1]].breaker
            if earlier
            else Breaker(cooldown=BREAKER_COOLDOWN_SECONDS, provider=provider, model=model)
        )
        for old in earlier:
            del _gates[old]
        pace = SharedPace(model_id, requests_per_minute) if requests_per_minute else None
        gate = _gates[key] = Gate(pace=pace, breaker=breaker)
    return gate


def counts_against_model(
    error: TargetError, time_limit: float | None, model_time_limit: float | None
) -> bool:
    """Whether a failed call counts against its model's circuit breaker. A timeout under a
    limit shorter than the model configuration's own (a run's `timeout_seconds`) is that run's
    choice, not the model failing: the breaker is shared by every run on the model, so it
    neither opens it nor fails a trial. A timeout at the model's own limit does count."""
    if (
        error.kind == "timeout"
        and time_limit  # (none, or 0: the call had the model's own limit)
        and model_time_limit is not None
        and time_limit < model_time_limit
    ):
        return False
    return error.kind in BREAKER_KINDS


def retry_delay(error: TargetError, attempt: int) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, RETRY_MAX_SECONDS)
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**attempt) * random.uniform(0.5, 1.5)


async def call_through(
    gate: Gate,
    call: Callable[[], Awaitable[TargetReply]],
    *,
    time_limit: float | None = None,
    model_time_limit: float | None = None,
) -> TargetReply:
    """`time_limit`: the limit the call was given, if not the model configuration's own
    (`model_time_limit`); see counts_against_model."""
    attempt = 0
    while True:
        trial = await gate.breaker.admit()
        try:
            if gate.pace is not None:
                await gate.pace.wait()
            reply = await call()
        except TargetError as error:
            if counts_against_model(error, time_limit, model_time_limit):
                gate.breaker.failed(trial=trial)
            elif trial is not None:
                gate.breaker.abandoned(trial)
            if error.kind not in RETRYABLE or attempt >= MAX_RETRIES:
                raise
            await asyncio.sleep(retry_delay(error, attempt))
            attempt += 1
            continue
        except BaseException:  # cancelled, or a bug: a trial must not hold the circuit open
            if trial is not None:
                gate.breaker.abandoned(trial)
            raise
        gate.breaker.succeeded()
        return reply
