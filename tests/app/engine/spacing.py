"""The rule both paces are held to, measured on when their calls actually went."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.engine.pacing import Pacer


def assert_each_call_waits_for_its_slot(
    stamps: list[float], started: float, interval: float
) -> None:
    """The k-th call (in time order) goes no sooner than k intervals after the start.

    A call never goes before its slot, so a late wake-up (a busy machine) only moves it later
    and cannot break the bound; a burst, or calls on two schedules, break it at the second call.
    A minimum gap between wake-ups would fail on one late wake-up followed by a punctual one.
    """
    for k, stamp in enumerate(sorted(stamps)):
        assert stamp - started >= k * interval * 0.95, (k, [round(s - started, 3) for s in stamps])


async def assert_an_overslept_call_takes_the_next_free_slot(
    pace: Pacer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls wait: the first takes the next slot (the second waits its turn), then the
    event loop stalls until a quarter interval after the slot after it. When the loop comes
    back the first, which overslept by more than half an interval, takes the next free slot
    (now) and goes at once; the second's slot then follows an interval later. Without the
    second slot both would go together: the schedule thought the first had gone long ago."""
    taken = 0
    take_slot = pace.take_slot  # type: ignore[attr-defined]

    async def counted(*args: Any) -> float:
        nonlocal taken
        delay = float(await take_slot(*args))
        taken += 1
        return delay

    monkeypatch.setattr(pace, "take_slot", counted)
    await pace.wait()  # the slot of now: the two calls take the next two
    started = time.monotonic()
    stamps: list[float] = []

    async def call() -> None:
        await pace.wait()
        stamps.append(time.monotonic())

    calls = [asyncio.create_task(call()) for _ in range(2)]
    deadline = started + pace.interval
    while taken < 2:
        assert time.monotonic() < deadline, "the calls did not take their slots"
        await asyncio.sleep(0.005)
    # The loop stalls, on purpose.
    time.sleep(max(0.0, started + 2.25 * pace.interval - time.monotonic()))  # noqa: ASYNC251
    back = time.monotonic()
    await asyncio.gather(*calls)
    first, second = sorted(stamps)
    assert taken == 4, taken  # one slot more, for the call that overslept
    assert first - back < 0.25 * pace.interval, (back, stamps)
    assert second - first >= 0.5 * pace.interval, (back, stamps)
