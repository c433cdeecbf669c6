"""The rule both paces are held to, measured on when their calls actually went."""

from __future__ import annotations


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
