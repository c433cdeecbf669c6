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
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import read_beside
from database.evaluations.scoring import higher_passes
from database.results import changes, model_pins, paired_tests
from database.results.comparison_schemas import (
    CaseCounts,
    Comparison,
    Delta,
    Errors,
    Method,
    MetricComparison,
    RunErrors,
    SliceComparison,
    Tested,
)
from database.results.crud import pairing
from database.results.crud.pairing import MetricPairs, PairedCase
from database.results.models import Run
from database.results.verdicts import ALPHA, Pending, tested
from utils import statistics as stats
from utils.errors import InvalidInput

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


async def compare(
    session: AsyncSession, candidate: Run, baseline: Run, options: CompareOptions
) -> Comparison:
    seed = stats.seed_for(str(baseline.id), str(candidate.id))
    # The metrics on a connection of their own while the cases are read here, where a second
    # transaction sees what this one does (see side_reader).
    async with (
        read_beside(session, lambda reader: _metrics(reader, baseline, candidate)) as metrics_read,
        pairing.whole_run_plans(session),
    ):
        runs = await pairing.paired_runs(session, baseline, candidate)
        latency = _latency_early(runs, options, seed)
        try:
            cases = await pairing.paired_cases(session, baseline, candidate, runs)
            usable = _usable(cases.baseline, cases.candidate, cases.changed, options)
            if latency is None:
                latency = _latency((cases.baseline, cases.candidate), usable, seed)
            metrics = _directed(metrics_read, baseline, candidate)
            prepared, analysed = await _analysed(cases, usable, metrics, seed, options)
            p50, p95 = await latency
        finally:
            if latency is not None:
                await asyncio.gather(latency, return_exceptions=True)  # (done, or never awaited)
    # Only a case whose pass share moved can have flipped: the others need no object.
    flips = await changes.flips(
        session, baseline, candidate, prepared.moved, options.flips_limit, options.flips_offset
    )
    return Comparison(
        run_id=candidate.id,
        baseline_run_id=baseline.id,
        run_status=candidate.status,
        baseline_status=baseline.status,
        partial=candidate.status != "completed" or baseline.status != "completed",
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        flips=flips,
        errors=Errors(run=_errors(cases.candidate), baseline=_errors(cases.baseline)),
        **_incomparable_rates(analysed, baseline, candidate),
    )


def _errors(side: pairing.SideColumns) -> RunErrors:
    """The run's errored results and all its results, as a gate counts them (figures.pass_rate)."""
    errored = int(np.nansum(side.errored))
    return RunErrors(errored=errored, results=errored + int(np.nansum(side.scored)))


# What decides whether a metric passes, as each run froze it.
_RULE = ("type", "threshold", "operator", "negate", "parameters")


def _incomparable_rates(analysed: dict[str, Any], baseline: Run, candidate: Run) -> dict[str, Any]:
    """Pass rates measured by different rules are no change of the answers: a metric whose
    rule changed between the runs (a threshold lowered reads as an improvement), and the
    overall rate (every metric passing) and its slices' when the runs' metrics or their
    rules differ, are inconclusive, saying why. Scores are compared as they were: a rule
    does not change them, but another judge does, so a metric judged by another model (or
    the same one configured otherwise) is not compared at all."""
    changed, unmatched = _rule_changes(baseline, candidate)
    judged = model_pins.changed_judges(baseline, candidate)
    for metric in analysed["metrics"]:
        whys = []
        if metric.name in changed:
            whys.append(f"its rule changed between the runs ({changed[metric.name]})")
        if metric.name in judged:
            whys.append(f"its judge changed between the runs ({judged[metric.name]})")
            if metric.score is not None:
                metric.score = _not_comparable(metric.score, whys[-1])
        if whys:
            metric.pass_rate = _not_comparable(metric.pass_rate, "; ".join(whys))
    what = [f"{name}'s rule changed" for name in sorted(changed)]
    what += [f"{name}'s judge changed" for name in sorted(judged)]
    what += [f"{name} is in one run only" for name in unmatched]
    if what:
        why = "; ".join(what)
        analysed["overall"] = _not_comparable(analysed["overall"], why)
        analysed["verdict"], analysed["reason"] = "inconclusive", analysed["overall"].reason
        for piece in analysed["slices"]:  # a slice's rate is the overall one, of its cases
            piece.pass_rate = _not_comparable(piece.pass_rate, why)
    return analysed


def _rule_changes(baseline: Run, candidate: Run) -> tuple[dict[str, str], list[str]]:
    """The metrics of both runs whose rule changed, each with what changed, and the metrics
    of one run only."""
    rules = [
        {spec["name"]: {key: spec.get(key) for key in _RULE} for spec in run.metrics or []}
        for run in (baseline, candidate)
    ]
    changed = {
        name: ", ".join(
            key if key == "parameters" else f"{key} {rules[0][name][key]} → {rules[1][name][key]}"
            for key in _RULE
            if rules[0][name][key] != rules[1][name][key]
        )
        for name in rules[0].keys() & rules[1].keys()
        if rules[0][name] != rules[1][name]
    }
    return changed, sorted(rules[0].keys() ^ rules[1].keys())


def _not_comparable(tested: Tested, why: str) -> Tested:
    return tested.model_copy(
        update={
            "verdict": "inconclusive",
            "not_worse": False,
            "reason": f"{tested.reason.split(f': {tested.verdict}', 1)[0]}: inconclusive,"
            f" not comparable: {why}",
        }
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


def _usable(
    baseline: pairing.SideColumns,
    candidate: pairing.SideColumns,
    changed: np.ndarray | None,
    options: CompareOptions,
) -> np.ndarray:
    """The cases both runs have, and whose test did not change (`changed`; None when no test
    can have: one version), unless those are included."""
    both = baseline.present & candidate.present
    if not both.any():
        raise InvalidInput(
            f"the runs have no case in common: this run has "
            f"{int(candidate.present.sum())} case(s), the baseline "
            f"{int(baseline.present.sum())}",
            field="baseline",
        )
    if changed is None or options.include_changed:
        return np.flatnonzero(both)
    return np.flatnonzero(both & ~changed)


_Latency = asyncio.Task[tuple[Delta, Delta]]


def _latency(
    sides: tuple[pairing.SideColumns, pairing.SideColumns], usable: np.ndarray, seed: int
) -> _Latency:
    """The latency quantiles' bootstrap, the longest of the statistics, in a thread."""
    return asyncio.create_task(
        asyncio.to_thread(changes.latency_deltas, *_figure(sides, usable, "latency"), seed)
    )


def _latency_early(runs: pairing.PairedRuns, options: CompareOptions, seed: int) -> _Latency | None:
    """The latency bootstrap, started as soon as the runs' rows are read, when the cases it
    takes are known from them: no test can have changed (one version), or changed ones are
    included. Else (None) it is started once the versions' cases are read."""
    if not (runs.same_version or options.include_changed):
        return None
    usable = _usable(runs.baseline, runs.candidate, None, options)
    return _latency((runs.baseline, runs.candidate), usable, seed)


async def _analysed(
    cases: pairing.PairedColumns,
    usable: np.ndarray,
    metrics: Awaitable[dict[str, MetricPairs]],
    seed: int,
    options: CompareOptions,
) -> tuple[_ByCase, dict[str, Any]]:
    """What needs no metric (the overall and slices' tests, the cases that may have flipped), in
    a thread while the metrics are read; then the rest of the analysis."""
    by_case = asyncio.create_task(asyncio.to_thread(_by_case, cases, usable, seed))
    try:
        found = await metrics
        prepared = await by_case
        analysed = await asyncio.to_thread(_analyse, cases, usable, prepared, found, seed, options)
    finally:
        await asyncio.gather(by_case, return_exceptions=True)  # (done, or never awaited)
    return prepared, analysed


def _figure(
    sides: tuple[pairing.SideColumns, pairing.SideColumns], usable: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A per-case figure (cost, tokens, latency) of both sides, of the usable cases where both
    have it."""
    a, b = getattr(sides[0], name)[usable], getattr(sides[1], name)[usable]
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


def _by_case(cases: pairing.PairedColumns, usable: np.ndarray, seed: int) -> _ByCase:
    shares = (cases.baseline.share, cases.candidate.share)
    rated = usable[~(np.isnan(shares[0][usable]) | np.isnan(shares[1][usable]))]
    rated_shares = (shares[0][rated], shares[1][rated])
    moved = rated[rated_shares[0] != rated_shares[1]]
    return _ByCase(
        rated=rated,
        shares=rated_shares,
        overall=paired_tests.tested_pair(
            "pass rate", False, *rated_shares, paired_tests.PRIMARY, seed
        ),
        slices=paired_tests.slices(cases, rated, rated_shares, seed),
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
    intervals = paired_tests.Intervals(seed)
    pending: list[Pending] = []

    def added(tested: Pending, normal: bool = False) -> int:
        tested.slot = intervals.add(tested.candidate - tested.baseline, normal=normal)
        pending.append(tested)
        return len(pending) - 1

    def add(
        label: str, graded: bool, a: np.ndarray, b: np.ndarray, family: str, lower: bool = False
    ) -> int:
        return added(paired_tests.tested_pair(label, graded, a, b, family, seed, lower))

    overall = added(by_case.overall)
    metric_slots = paired_tests.add_metrics(add, cases, rated, metric_pairs)
    large = len(rated) >= stats.LARGE_N
    slice_slots = [
        (field, value, added(tested, normal=large)) for field, value, tested in by_case.slices
    ]
    sides = (cases.baseline, cases.candidate)
    figures = {name: _figure(sides, usable, name) for name in ("cost", "tokens")}
    figure_slots = {name: intervals.add(b - a) for name, (a, b) in figures.items()}
    bounds = intervals.compute()
    adjusted, family_sizes = paired_tests.holm_by_family(pending)
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
            multiple_comparisons=paired_tests.HOLM,
            families=family_sizes,
            flips=FLIPS_RULE,
        ),
    )
