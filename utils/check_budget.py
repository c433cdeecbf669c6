"""One time budget for all of a check's tenant-controlled work: its schema validations, its
patterns, and every turn of a conversation it checks, together.

Each piece is bounded on its own (a pattern's match, a schema's validation, one answer's
length); without a budget for the whole, a check over fifty turns, or over each of an answer's
tool calls, would take fifty times its bound.

The budget is the CPU time of the thread doing the check, as `regex`'s own timeouts are: a
check's verdict must not depend on what else the machine runs meanwhile."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

CHECK_SECONDS = 1.0
_DEADLINE: ContextVar[float | None] = ContextVar("check_deadline", default=None)


class OutOfTime(ValueError):
    """The check's budget is spent."""


@contextlib.contextmanager
def one_budget() -> Iterator[None]:
    """Everything inside shares one CHECK_SECONDS (an outer budget, if one is under way,
    stands)."""
    if _DEADLINE.get() is not None:
        yield
        return
    token = _DEADLINE.set(time.thread_time() + CHECK_SECONDS)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def seconds_left(cap: float) -> float:
    """The seconds one piece of work may take: `cap`, or less when the budget under way ends
    sooner; OutOfTime when it has ended."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return cap
    left = deadline - time.thread_time()
    if left <= 0:
        raise OutOfTime(f"took longer than {CHECK_SECONDS:g} s in all")
    return min(left, cap)
