"""Matching an agent's tool calls with the calls a test expects: one with one (arguments equal
as JSON values, or holding a subset of them), and all with all, given which expected call
matches which call (agent_checks.py decides that): the largest one-to-one pairing, and the
longest pairing that keeps both orders.

The pairings walk every pair (up to 100 expected calls by 500 calls), the largest more than
once: they consult the check's budget as they go (OutOfTime once it is spent)."""

from __future__ import annotations

from typing import Any

from utils.check_budget import CHECK_SECONDS, seconds_left

Pairs = list[list[bool]]  # pairs[i][j]: the expected call i matches the actual call j


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1 == 1.0, but true is not 1 and "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_json, a, b))
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    return type(a) is type(b) and a == b


def within(actual: Any, wanted: Any) -> bool:
    """Every key of `wanted` in `actual` with an equal value, recursively through objects."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and within(actual[key], value) for key, value in wanted.items()
        )
    return same_json(actual, wanted)


def largest_matching(
    pairs: Pairs, actual: int, seed: list[int | None] | None = None
) -> list[int | None]:
    """A maximum one-to-one matching of expected calls to actual calls (augmenting paths):
    for each expected call, the actual call it is matched with, or None. An expected call that
    `seed` matches stays matched (to this call or another)."""
    matched: list[int | None] = list(seed) if seed else [None] * len(pairs)
    partner: list[int | None] = [None] * actual  # actual -> expected
    for i, j in enumerate(matched):
        if j is not None:
            partner[j] = i
    for start in (i for i, j in enumerate(matched) if j is None):
        seconds_left(CHECK_SECONDS)  # each search may walk every pair
        reached_from: dict[int, int] = {}  # actual call -> the expected call that reached it
        queue, free = [start], None
        for i in queue:
            for j in (j for j, ok in enumerate(pairs[i]) if ok and j not in reached_from):
                reached_from[j], owner = i, partner[j]
                if owner is None:
                    free = j
                    break
                queue.append(owner)
            if free is not None:
                break
        while free is not None:  # flip the path's pairs
            i = reached_from[free]
            matched[i], partner[free], free = free, i, matched[i]
    return matched


def longest_in_order(pairs: Pairs, actual: int) -> list[int | None]:
    """The longest in-order match (LCS with the call-matching predicate): for each expected
    call, the actual call it holds it with, or None."""
    n = len(pairs)
    best = [[0] * (actual + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        seconds_left(CHECK_SECONDS)
        for j in range(actual - 1, -1, -1):
            best[i][j] = (
                best[i + 1][j + 1] + 1 if pairs[i][j] else max(best[i + 1][j], best[i][j + 1])
            )
    held: list[int | None] = [None] * n
    i = j = 0
    while i < n and j < actual:
        if pairs[i][j] and best[i][j] == best[i + 1][j + 1] + 1:
            held[i], i, j = j, i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return held
