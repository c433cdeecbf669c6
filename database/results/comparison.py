"""Did the candidate run do better or worse than its baseline? Cases paired by test (SQL, in
pairing.py), each case's value the mean over its repetitions, a paired bootstrap over cases for
every interval, McNemar's exact test (a sign test, with repetitions) on pass/fail and the
signed-rank test on graded scores, Holm's correction across every test of the response, and a
verdict per metric, per slice and overall.

Every figure is candidate minus baseline; for pass rates and scores higher is better."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from database.results import changes
from database.results.crud import pairing
from database.results.crud.pairing import PairedCase
from database.results.models import Run
from database.results.schemas import (
    Comparison,
    Method,
    MetricComparison,
    SliceComparison,
)
from database.results.verdicts import ALPHA, Pending, paired_test, tested
from utils import statistics as stats
from utils.errors import InvalidInput

SLICE_FIELDS = ("behavior", "category", "topic")
MAX_SLICES = 50  # values per field, the most common first
FLIPS_RULE = (
    "A case passes when at least half of its scored repetitions pass; a flip is a case that "
    "passes on one side and not on the other."
)


@dataclass(frozen=True)
class CompareOptions:
    include_changed: bool = False
    min_effect: float = 0.02
    flips_limit: int = 20
    flips_offset: int = 0


class _Intervals:
    """Bootstrap intervals of mean deltas, computed together: the resamples depend only on the
    seed and the number of cases, so the deltas of as many cases share one resampling."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._groups: dict[int, tuple[list[np.ndarray], list[int]]] = {}
        self._count = 0

    def add(self, deltas: np.ndarray) -> int:
        columns, slots = self._groups.setdefault(len(deltas), ([], []))
        columns.append(deltas)
        slots.append(self._count)
        self._count += 1
        return self._count - 1

    def compute(self) -> list[tuple[float, float] | None]:
        found: list[tuple[float, float] | None] = [None] * self._count
        for n, (columns, slots) in self._groups.items():
            if n == 0:
                continue
            bounds = stats.PairedBootstrap(n, seed=self.seed).mean_intervals(
                np.column_stack(columns)
            )
            for slot, (low, high) in zip(slots, bounds, strict=True):
                found[slot] = (float(low), float(high))
        return found


async def compare(
    session: AsyncSession, candidate: Run, baseline: Run, options: CompareOptions
) -> Comparison:
    async with pairing.whole_run_plans(session):
        cases = await pairing.paired_cases(session, baseline, candidate)
        usable = _usable(cases, options)
        seed = stats.seed_for(str(baseline.id), str(candidate.id))
        # The latency quantiles take the longest of the statistics: they are computed (in a
        # thread) while the metrics are read.
        latency = asyncio.create_task(
            asyncio.to_thread(changes.latency_deltas, *changes.figures(usable, "latency"), seed)
        )
        try:
            metrics = await pairing.paired_metrics(session, baseline, candidate)
        finally:
            p50, p95 = await latency
    if not any(c.baseline is not None and c.candidate is not None for c in cases):
        raise InvalidInput(
            f"the runs have no case in common: this run has "
            f"{sum(c.candidate is not None for c in cases)} case(s), the baseline "
            f"{sum(c.baseline is not None for c in cases)}",
            field="baseline",
        )
    # The statistics take a few hundred milliseconds for a large run: off the event loop.
    analysed, rated = await asyncio.to_thread(_analyse, cases, usable, metrics, seed, options)
    flips = await changes.flips(
        session, baseline, candidate, rated, options.flips_limit, options.flips_offset
    )
    return Comparison(
        run_id=candidate.id,
        baseline_run_id=baseline.id,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        flips=flips,
        **analysed,
    )


def _usable(cases: Sequence[PairedCase], options: CompareOptions) -> list[PairedCase]:
    """The cases both runs have, those whose test changed left out unless asked for."""
    return [
        c
        for c in cases
        if c.baseline is not None
        and c.candidate is not None
        and (options.include_changed or not c.changed)
    ]


def _analyse(
    cases: list[PairedCase],
    usable: list[PairedCase],
    metric_pairs: dict[str, pairing.MetricPairs],
    seed: int,
    options: CompareOptions,
) -> tuple[dict[str, Any], list[PairedCase]]:
    """Everything of the comparison but latency and the flips' outputs."""
    changed = [c for c in cases if c.changed]
    rated = [
        c for c in usable if c.share("baseline") is not None and c.share("candidate") is not None
    ]
    intervals = _Intervals(seed)
    pending: list[Pending] = []

    def add(label: str, graded: bool, a: np.ndarray, b: np.ndarray, family: str) -> int:
        mask = ~(np.isnan(a) | np.isnan(b))
        a, b = a[mask], b[mask]
        slot = intervals.add(b - a)
        test, p = paired_test(a, b, graded)
        pending.append(Pending(label, family, graded, a, b, slot, test, p))
        return len(pending) - 1

    overall = add(
        "pass rate", False, _shares(rated, "baseline"), _shares(rated, "candidate"), PRIMARY
    )
    metric_slots = _add_metrics(add, rated, metric_pairs)
    slice_slots = _add_slices(add, rated)
    figures = {name: changes.figures(usable, name) for name in ("cost", "tokens")}
    figure_slots = {name: intervals.add(b - a) for name, (a, b) in figures.items()}
    bounds = intervals.compute()
    adjusted, family_sizes = _holm_by_family(pending)
    results = [
        tested(p, bounds[p.slot], adjusted[i], options.min_effect) for i, p in enumerate(pending)
    ]
    head = results[overall]
    analysed = dict(
        verdict=head.verdict,
        reason=head.reason,
        cases=changes.case_counts(cases, changed, usable, rated, options.include_changed),
        overall=head,
        metrics=[
            MetricComparison(
                name=name,
                type=kind,
                pass_rate=results[rate],
                score=results[score] if score is not None else None,
            )
            for name, kind, rate, score in metric_slots
        ],
        slices=[
            SliceComparison(field=field, value=value, pass_rate=results[slot])
            for field, value, slot in slice_slots
        ],
        cost=changes.mean_delta(*figures["cost"], bounds[figure_slots["cost"]]),
        tokens=changes.mean_delta(*figures["tokens"], bounds[figure_slots["tokens"]]),
        method=Method(
            confidence=stats.CONFIDENCE,
            resamples=stats.RESAMPLES,
            seed=seed,
            min_effect=options.min_effect,
            alpha=ALPHA,
            multiple_comparisons=HOLM,
            families=family_sizes,
            flips=FLIPS_RULE,
        ),
    )
    return analysed, rated


# --- what is compared -----------------------------------------------------------------------

Add = Callable[[str, bool, np.ndarray, np.ndarray, str], int]
PRIMARY, EXPLORATORY = "primary", "exploratory"
HOLM = (
    "Holm, within each of two families: primary (the overall pass rate and each metric's: what"
    " a gate decides on) and exploratory (graded scores, slices); identical comparisons count"
    " once"
)


def _holm_by_family(pending: Sequence[Pending]) -> tuple[list[float], dict[str, int]]:
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


def _shares(cases: Sequence[PairedCase], side: str) -> np.ndarray:
    return np.array([c.share(side) for c in cases], dtype=float)


def _add_metrics(
    add: Add, cases: Sequence[PairedCase], metrics: dict[str, pairing.MetricPairs]
) -> list[tuple[str, str | None, int, int | None]]:
    """The metrics both runs have, in name order: pass shares (primary), and scores when
    graded (exploratory)."""
    order = {case.key: i for i, case in enumerate(cases)}
    slots = []
    for name in sorted(metrics):
        pairs = metrics[name]
        if pairs.baseline is None or pairs.candidate is None:
            continue
        sides = (pairs.baseline, pairs.candidate)
        rates = [side.column(order, len(cases), graded=False) for side in sides]
        rate = add(f"{name} pass rate", False, rates[0], rates[1], PRIMARY)
        score = None
        if not all(side.binary for side in sides):
            scores = [side.column(order, len(cases), graded=True) for side in sides]
            score = add(f"{name} mean score", True, scores[0], scores[1], EXPLORATORY)
        slots.append((name, pairs.type, rate, score))
    return slots


def _add_slices(add: Add, cases: Sequence[PairedCase]) -> list[tuple[str, str | None, int]]:
    """The pass rate per behavior, category and topic (exploratory); a field with one value
    for every case says nothing the overall pass rate does not."""
    slots = []
    for field in SLICE_FIELDS:
        groups: dict[str | None, list[PairedCase]] = {}
        for case in cases:
            groups.setdefault(getattr(case, field), []).append(case)
        if len(groups) < 2:
            continue
        for value in sorted(groups, key=lambda v: (-len(groups[v]), v or ""))[:MAX_SLICES]:
            members = groups[value]
            slot = add(
                f"{field} {value!r} pass rate",
                False,
                _shares(members, "baseline"),
                _shares(members, "candidate"),
                EXPLORATORY,
            )
            slots.append((field, value, slot))
    return slots
