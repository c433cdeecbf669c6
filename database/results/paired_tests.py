"""The paired tests a comparison makes, each waiting for its interval (Pending): of the pass
rate, each metric's pass rate and graded score, and the pass rate per slice; their intervals,
computed together; and Holm's correction within each family of tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from database.results.crud import pairing
from database.results.verdicts import Pending, paired_test
from database.test_sets.slice_index import SLICES
from utils import statistics as stats

MAX_SLICES = 50  # values per field, the most common first

Add = Callable[[str, bool, np.ndarray, np.ndarray, str, bool], int]
PRIMARY, EXPLORATORY = "primary", "exploratory"
HOLM = (
    "Holm, within each of two families: primary (the overall pass rate and each metric's: what"
    " a gate decides on) and exploratory (graded scores, slices); identical comparisons count"
    " once"
)


class Intervals:
    """Bootstrap intervals of mean deltas, computed together: the resamples depend only on the
    seed and the number of cases, so the deltas of as many cases share one resampling.

    A delta added as `normal` (a large comparison's slice) gets the normal interval of LARGE_N
    cases and more, whatever its size: each slice size was a bootstrap of its own, seconds at
    100,000 cases. It covers as the bootstrap does down to ten cases (see its tests)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._groups: dict[int, tuple[list[np.ndarray], list[int]]] = {}
        self._normal: list[tuple[np.ndarray, int]] = []
        self._count = 0

    def add(self, deltas: np.ndarray, *, normal: bool = False) -> int:
        if normal:
            self._normal.append((deltas, self._count))
        else:
            columns, slots = self._groups.setdefault(len(deltas), ([], []))
            columns.append(deltas)
            slots.append(self._count)
        self._count += 1
        return self._count - 1

    def compute(self) -> list[tuple[float, float] | None]:
        found: list[tuple[float, float] | None] = [None] * self._count
        for deltas, slot in self._normal:
            if len(deltas):
                low, high = stats.normal_mean_intervals(deltas[:, None])[0]
                found[slot] = (float(low), float(high))
        for n, (columns, slots) in self._groups.items():
            if n == 0:
                continue
            bounds = stats.PairedBootstrap(n, seed=self.seed).mean_intervals(
                np.column_stack(columns)
            )
            for slot, (low, high) in zip(slots, bounds, strict=True):
                found[slot] = (float(low), float(high))
        return found


def holm_by_family(pending: Sequence[Pending]) -> tuple[list[float], dict[str, int]]:
    """Holm-adjusted p-values, each family on its own, and each family's size."""
    adjusted = [math.nan] * len(pending)
    sizes = {}
    for family in (PRIMARY, EXPLORATORY):
        same: dict[bytes, list[int]] = {}
        for i, p in enumerate(pending):
            if p.family == family:
                key = p.test.encode() + p.baseline.tobytes() + b"/" + p.candidate.tobytes()
                same.setdefault(key, []).append(i)
        groups = list(same.values())
        values = stats.holm([pending[group[0]].p_value for group in groups])
        for group, value in zip(groups, values, strict=True):
            for i in group:
                adjusted[i] = value
        sizes[family] = sum(not math.isnan(v) for v in values)
    return adjusted, sizes


def _case_of_position(side: pairing.SideColumns, rated: np.ndarray) -> np.ndarray:
    """Each of one run's positions' index among the rated cases (-1: not rated)."""
    positions = side.position[rated]
    found = np.full(int(side.position.max(initial=-1)) + 1, -1, dtype=np.int64)
    found[positions] = np.arange(len(rated))
    return found


def add_metrics(
    add: Add,
    cases: pairing.PairedColumns,
    rated: np.ndarray,
    metrics: dict[str, pairing.MetricPairs],
) -> list[tuple[str, str | None, int, int | None]]:
    """The metrics both runs have, in name order: pass shares (primary), and scores when
    graded (exploratory)."""
    lookups = (
        _case_of_position(cases.baseline, rated),
        _case_of_position(cases.candidate, rated),
    )
    slots = []
    for name in sorted(metrics):
        pairs = metrics[name]
        if pairs.baseline is None or pairs.candidate is None:
            continue
        sides = (pairs.baseline, pairs.candidate)
        rates = [
            side.column(lookup, len(rated), graded=False)
            for side, lookup in zip(sides, lookups, strict=True)
        ]
        rate = add(f"{name} pass rate", False, rates[0], rates[1], PRIMARY, False)
        score = None
        if not all(side.binary for side in sides) and pairs.higher_passes is not None:
            scores = [
                side.column(lookup, len(rated), graded=True)
                for side, lookup in zip(sides, lookups, strict=True)
            ]
            label = f"{name} mean score" + ("" if pairs.higher_passes else " (lower passes)")
            score = add(label, True, scores[0], scores[1], EXPLORATORY, not pairs.higher_passes)
        slots.append((name, pairs.type, rate, score))
    return slots


def slices(
    cases: pairing.PairedColumns,
    rated: np.ndarray,
    shares: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> list[tuple[str, str | None, Pending]]:
    """The pass rate per behavior, category and topic (exploratory); a field with one value
    for every case says nothing the overall pass rate does not."""
    slots = []
    for field in SLICES:
        values, codes = cases.slices.values[field], cases.slices.codes[field][rated]
        found, first, counts = np.unique(codes, return_index=True, return_counts=True)
        if len(found) < 2:
            continue
        # Each group's members, in the order of the rated cases.
        order, ends = np.argsort(codes, kind="stable"), np.cumsum(counts).tolist()
        groups = [
            (values[code], end - size, end, start)
            for code, size, end, start in zip(
                found.tolist(), counts.tolist(), ends, first.tolist(), strict=True
            )
        ]
        # The largest first; ties by value, then by the first rated case having it.
        groups.sort(key=lambda group: (group[1] - group[2], group[0] or "", group[3]))
        for value, start, end, _ in groups[:MAX_SLICES]:
            members = order[start:end]
            label = f"{field} {value!r} pass rate"
            tested = tested_pair(
                label, False, shares[0][members], shares[1][members], EXPLORATORY, seed
            )
            slots.append((field, value, tested))
    return slots


def tested_pair(
    label: str,
    graded: bool,
    a: np.ndarray,
    b: np.ndarray,
    family: str,
    seed: int,
    lower_is_better: bool = False,
) -> Pending:
    """A paired comparison of the cases where both sides have a value, tested; its interval's
    slot is given when it is added (see comparison._analyse)."""
    mask = ~(np.isnan(a) | np.isnan(b))
    a, b = a[mask], b[mask]
    test, p = paired_test(a, b, graded, seed=seed)
    return Pending(label, family, graded, a, b, -1, test, p, lower_is_better)
