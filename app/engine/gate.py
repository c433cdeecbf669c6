"""What stands between the engine and a model: a requests-per-minute pace shared by the
process, retries on 429/5xx/connection errors (honouring Retry-After), a circuit breaker."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from providers.targets import TargetError, TargetReply

RETRYABLE = frozenset({"rate_limited", "server_error", "connection_error"})
# A 429 is the provider pacing us, not failing: it is retried but does not open the circuit.
BREAKER_KINDS = frozenset({"server_error", "connection_error", "timeout"})
MAX_RETRIES = 3
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN_SECONDS = 30.0


class Pace:
    """Spaces calls evenly to stay under a requests-per-minute limit (no bursts)."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Breaker:
    """Opens after consecutive failures; lets one trial call through after the cooldown."""

    threshold: int = BREAKER_THRESHOLD
    cooldown: float = BREAKER_COOLDOWN_SECONDS
    failures: int = 0
    opened_at: float | None = None
    _trial: bool = field(default=False, repr=False)

    def check(self) -> bool:
        """Raises `circuit_open` while open; True when this call is the half-open trial."""
        if self.opened_at is None:
            return False
        if time.monotonic() - self.opened_at < self.cooldown or self._trial:
            remaining = max(0.0, self.cooldown - (time.monotonic() - self.opened_at))
            raise TargetError(
                "circuit_open",
                f"the model failed {self.failures} times in a row; not calling it for "
                f"{remaining:.0f} s more",
            )
        self._trial = True
        return True

    def abandoned(self) -> None:
        """The trial ended without a verdict (cancelled, or an error that says nothing of the
        model's health): the next call after the cooldown may try again."""
        self._trial = False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self._trial = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self._trial = False
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


@dataclass
class Gate:
    pace: Pace | None
    breaker: Breaker = field(default_factory=Breaker)


_gates: dict[tuple[uuid.UUID, int | None], Gate] = {}


def gate_for(model_id: uuid.UUID, requests_per_minute: int | None) -> Gate:
    """One gate per model configuration per process (a changed limit makes a new one)."""
    key = (model_id, requests_per_minute)
    gate = _gates.get(key)
    if gate is None:
        gate = _gates[key] = Gate(pace=Pace(requests_per_minute) if requests_per_minute else None)
    return gate


def retry_delay(error: TargetError, attempt: int) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, RETRY_MAX_SECONDS)
    return min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**attempt) * random.uniform(0.5, 1.5)


async def call_through(gate: Gate, call: Callable[[], Awaitable[TargetReply]]) -> TargetReply:
    attempt = 0
    while True:
        trial = gate.breaker.check()
        try:
            if gate.pace is not None:
                await gate.pace.wait()
            reply = await call()
        except TargetError as error:
            if error.kind in BREAKER_KINDS:
                gate.breaker.failed()
            elif trial:
                gate.breaker.abandoned()
            if error.kind not in RETRYABLE or attempt >= MAX_RETRIES:
                raise
            await asyncio.sleep(retry_delay(error, attempt))
            attempt += 1
            continue
        except BaseException:  # cancelled, or a bug: a trial must not hold the circuit open
            if trial:
                gate.breaker.abandoned()
            raise
        gate.breaker.succeeded()
        return reply
