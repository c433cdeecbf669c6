"""Did the candidate run do better or worse than its baseline? Cases paired by test (SQL, in
pairing.py), each case's value the mean over its repetitions, a paired bootstrap over cases for
every interval, McNemar's exact test on pass/fail (the sign-flip test of the mean change, with
repetitions) and the signed-rank test on graded scores, Holm's correction across every test of
the response, and a verdict per metric, per slice and overall.

Every figure is candidate minus baseline. For pass rates higher is better; for a metric's
scores, whichever way its rule passes (a score that passes below its threshold is better
lower), and a score whose rule has no direction (==) is not compared."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import read_beside
from database.evaluations.scoring import higher_passes
from database.results import changes
from database.results.crud import pairing
from database.results.crud.pairing import MetricPairs, PairedCase
from database.results.models import Run
from database.results.schemas import (
    CaseCounts,
    Comparison,
    Delta,
    Method,
    MetricComparison,
    SliceComparison,
)
from database.results.verdicts import ALPHA, Pending, paired_test, tested
from utils import statistics as stats
from utils.errors import InvalidInput

SLICE_FIELDS = pairing.SLICES  # behavior, category, topic
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
    # The metrics, the longest read, on a connection of their own while the cases are read
    # here, where a second transaction sees what this one does (see side_reader).
    async with (
        read_beside(session, lambda reader: _metrics(reader, baseline, candidate)) as metrics_read,
        pairing.whole_run_plans(session),
    ):
        cases = await pairing.paired_cases(session, baseline, candidate)
        usable = _usable(cases, options)
        metrics = _directed(metrics_read, baseline, candidate)
        seed = stats.seed_for(str(baseline.id), str(candidate.id))
        prepared, analysed, (p50, p95) = await _analysed(cases, usable, metrics, seed, options)
    # Only a case whose pass share moved can have flipped: the others need no object.
    flips = await changes.flips(
        session, baseline, candidate, prepared.moved, options.flips_limit, options.flips_offset
    )
    return Comparison(
        run_id=candidate.id,
        baseline_run_id=baseline.id,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        flips=flips,
        **analysed,
    )


async def _metrics(side: AsyncSession, baseline: Run, candidate: Run) -> dict[str, MetricPairs]:
    async with pairing.whole_run_plans(side):
        return await pairing.paired_metrics(side, baseline, candidate)


async def _directed(
    metrics: Awaitable[dict[str, MetricPairs]], baseline: Run, candidate: Run
) -> dict[str, MetricPairs]:
    """The metrics, each with the direction of its scores."""
    found = await metrics
    for name, pairs in found.items():
        pairs.higher_passes = _higher_passes(name, baseline, candidate)
    return found


def _higher_passes(name: str, *runs: Run) -> bool | None:
    """By the rule each run froze for the metric: a direction only if the runs agree (a metric
    neither run names, from before rules were frozen, is taken as passing high)."""
    found = {
        higher_passes(metric.get("operator", ">="), bool(metric.get("negate")))
        for run in runs
        for metric in run.metrics or []
        if metric.get("name") == name
    }
    if not found:
        return True
    return found.pop() if len(found) == 1 else None


def _usable(cases: pairing.PairedColumns, options: CompareOptions) -> np.ndarray:
    """The cases both runs have (and whose test did not change, unless those are included)."""
    both = cases.baseline.present & cases.candidate.present
    if not both.any():
        raise InvalidInput(
            f"the runs have no case in common: this run has "
            f"{int(cases.candidate.present.sum())} case(s), the baseline "
            f"{int(cases.baseline.present.sum())}",
            field="baseline",
        )
    return np.flatnonzero(both & (options.include_changed | ~cases.changed))


async def _analysed(
    cases: pairing.PairedColumns,
    usable: np.ndarray,
    metrics: Awaitable[dict[str, MetricPairs]],
    seed: int,
    options: CompareOptions,
) -> tuple[_ByCase, dict[str, Any], tuple[Delta, Delta]]:
    """The latency quantiles' bootstrap, and what needs no metric (the overall and slices'
    tests, the cases that may have flipped), run in threads while the metrics are read."""
    latency = asyncio.create_task(
        asyncio.to_thread(changes.latency_deltas, *_figure(cases, usable, "latency"), seed)
    )
    by_case = asyncio.create_task(asyncio.to_thread(_by_case, cases, usable, seed))
    try:
        found = await metrics
        prepared = await by_case
        analysed = await asyncio.to_thread(_analyse, cases, usable, prepared, found, seed, options)
    finally:
        await asyncio.gather(by_case, return_exceptions=True)  # (done, or never awaited)
        quantiles = await latency
    return prepared, analysed, quantiles


def _figure(
    cases: pairing.PairedColumns, usable: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A per-case figure (cost, tokens, latency) of both sides, of the usable cases where both
    have it."""
    a, b = getattr(cases.baseline, name)[usable], getattr(cases.candidate, name)[usable]
    found = ~(np.isnan(a) | np.isnan(b))
    return a[found], b[found]


def _case_counts(
    cases: pairing.PairedColumns, usable: np.ndarray, rated: np.ndarray, include_changed: bool
) -> CaseCounts:
    def listed(where: np.ndarray) -> list[uuid.UUID | None]:
        return [cases.test_id(i) for i in np.flatnonzero(where)[: changes.LISTED]]

    return CaseCounts(
        paired=len(rated),
        changed=int(cases.changed.sum()),
        changed_included=include_changed,
        only_in_run=int((~cases.baseline.present).sum()),
        only_in_baseline=int((~cases.candidate.present).sum()),
        unrated=len(usable) - len(rated),
        only_in_run_test_ids=listed(~cases.baseline.present),
        only_in_baseline_test_ids=listed(~cases.candidate.present),
        changed_test_ids=listed(cases.changed),
    )


@dataclass(frozen=True)
class _ByCase:
    """What needs no metric: the rated cases (both sides scored), their pass shares, the
    overall and per-slice comparisons (tested, waiting for their intervals), and the rated
    cases whose pass share moved (those that may have flipped), in order."""

    rated: np.ndarray
    shares: tuple[np.ndarray, np.ndarray]
    overall: Pending
    slices: list[tuple[str, str | None, Pending]]
    moved: list[PairedCase]


def _tested(
    label: str,
    graded: bool,
    a: np.ndarray,
    b: np.ndarray,
    family: str,
    seed: int,
    lower_is_better: bool = False,
) -> Pending:
    """A paired comparison of the cases where both sides have a value, tested; its interval's
    slot is given when it is added (see _analyse)."""
    mask = ~(np.isnan(a) | np.isnan(b))
    a, b = a[mask], b[mask]
    test, p = paired_test(a, b, graded, seed=seed)
    return Pending(label, family, graded, a, b, -1, test, p, lower_is_better)


def _by_case(cases: pairing.PairedColumns, usable: np.ndarray, seed: int) -> _ByCase:
    shares = (cases.baseline.share, cases.candidate.share)
    rated = usable[~(np.isnan(shares[0][usable]) | np.isnan(shares[1][usable]))]
    rated_shares = (shares[0][rated], shares[1][rated])
    moved = rated[rated_shares[0] != rated_shares[1]]
    return _ByCase(
        rated=rated,
        shares=rated_shares,
        overall=_tested("pass rate", False, *rated_shares, PRIMARY, seed),
        slices=_slices(cases, rated, rated_shares, seed),
        moved=cases.cases(moved),
    )


def _analyse(
    cases: pairing.PairedColumns,
    usable: np.ndarray,
    by_case: _ByCase,
    metric_pairs: dict[str, pairing.MetricPairs],
    seed: int,
    options: CompareOptions,
) -> dict[str, Any]:
    """Everything of the comparison but latency and the flips."""
    rated = by_case.rated
    intervals = _Intervals(seed)
    pending: list[Pending] = []

    def added(tested: Pending) -> int:
        tested.slot = intervals.add(tested.candidate - tested.baseline)
        pending.append(tested)
        return len(pending) - 1

    def add(
        label: str, graded: bool, a: np.ndarray, b: np.ndarray, family: str, lower: bool = False
    ) -> int:
        return added(_tested(label, graded, a, b, family, seed, lower))

    overall = added(by_case.overall)
    metric_slots = _add_metrics(add, cases, rated, metric_pairs)
    slice_slots = [(field, value, added(tested)) for field, value, tested in by_case.slices]
    figures = {name: _figure(cases, usable, name) for name in ("cost", "tokens")}
    figure_slots = {name: intervals.add(b - a) for name, (a, b) in figures.items()}
    bounds = intervals.compute()
    adjusted, family_sizes = _holm_by_family(pending)
    results = [
        tested(p, bounds[p.slot], adjusted[i], options.min_effect) for i, p in enumerate(pending)
    ]
    head = results[overall]
    return dict(
        verdict=head.verdict,
        reason=head.reason,
        cases=_case_counts(cases, usable, rated, options.include_changed),
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


# --- what is compared -----------------------------------------------------------------------

Add = Callable[[str, bool, np.ndarray, np.ndarray, str, bool], int]
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


def _case_of_position(side: pairing.SideColumns, rated: np.ndarray) -> np.ndarray:
    """Each of one run's positions' index among the rated cases (-1: not rated)."""
    positions = side.position[rated]
    found = np.full(int(side.position.max(initial=-1)) + 1, -1, dtype=np.int64)
    found[positions] = np.arange(len(rated))
    return found


def _add_metrics(
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


def _slices(
    cases: pairing.PairedColumns,
    rated: np.ndarray,
    shares: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> list[tuple[str, str | None, Pending]]:
    """The pass rate per behavior, category and topic (exploratory); a field with one value
    for every case says nothing the overall pass rate does not."""
    slots = []
    for field in SLICE_FIELDS:
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
            tested = _tested(
                label, False, shares[0][members], shares[1][members], EXPLORATORY, seed
            )
            slots.append((field, value, tested))
    return slots
