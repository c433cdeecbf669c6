"""A run's summary: counts, the pass rate (one definition: schemas.PASS_RATE), metrics, slices,
latency, tokens and cost, and with repetitions per case pass@k, pass^k and flakiness."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import read_beside
from database.results.crud import figures
from database.results.crud.figures import CaseTally
from database.results.models import Run
from database.results.reads import run_reads
from database.results.schemas import (
    CaseRepetitions,
    GateResult,
    GroupSummary,
    MetricSummary,
    RepetitionSummary,
    RunSummary,
)
from utils import statistics as stats
from utils.pass_estimators import pass_at_k, pass_hat_k

FLAKY_LISTED = 100


async def summary(session: AsyncSession, run: Run) -> RunSummary:
    # The metrics, the longest read, on a connection of their own while the rest is read here.
    async with read_beside(session, lambda reader: figures.metrics(reader, run)) as metrics_read:
        read = (await run_reads(session, [run]))[0]
        rate, errored, results = await figures.pass_rate(session, run)
        result_figures = await figures.result_figures(session, run.id)
        groups = {
            field: [
                GroupSummary(value=value, results=n, errored=err, pass_rate=_round(group_rate))
                for value, n, err, group_rate in rows
            ]
            for field, rows in (await figures.slices(session, run)).items()
        }
        errors = await figures.error_counts(session, run.id)
        repetitions = await repetition_summary(session, run)
        metric_rows = await metrics_read
    judge_costs = [row.cost for row in metric_rows if row.cost is not None]
    return RunSummary(
        run_id=run.id,
        status=read.status,
        counts=read.counts,
        pass_rate=_round(rate),
        error_rate=_round(errored / results) if results else None,
        metrics=[
            MetricSummary(
                name=row.name,
                type=row.type,
                mean_score=_round(row.mean_score),
                pass_rate=_round(row.pass_rate),
                evaluated=row.evaluated,
                errored=row.errored,
            )
            for row in metric_rows
        ],
        latency_ms={key: _round(result_figures[key]) for key in ("p50", "p95", "p99", "mean")},
        tokens={"input": result_figures["input_tokens"], "output": result_figures["output_tokens"]},
        cost=_round(result_figures["cost"], 6),
        judge_cost=_round(sum(judge_costs), 6) if judge_costs else None,
        errors=errors,
        by_behavior=groups["behavior"],
        by_category=groups["category"],
        by_topic=groups["topic"],
        repetitions=repetitions,
        gate_result=GateResult.model_validate(run.gate_result) if run.gate_result else None,
    )


def case_repetitions(tally: CaseTally) -> CaseRepetitions:
    n, c = tally.scored, tally.passed
    ks = range(1, n + 1)
    return CaseRepetitions(
        position=tally.position,
        test_id=tally.test_id,
        repetitions=n,
        passed=c,
        errored=tally.errored,
        pass_at_k={k: round(pass_at_k(n, c, k), 6) for k in ks},
        pass_hat_k={k: round(pass_hat_k(n, c, k), 6) for k in ks},
        flaky=0 < c < n,
    )


async def repetition_summary(session: AsyncSession, run: Run) -> RepetitionSummary | None:
    if not await figures.has_repetitions(session, run.id):
        return None  # one result per case: nothing to read case by case
    tallies = await figures.case_tallies(session, run.id)
    if max((t.scored + t.errored for t in tallies), default=0) <= 1:
        return None
    # (a pass over every case: off the event loop)
    return await asyncio.to_thread(summarise_repetitions, tallies)


def summarise_repetitions(tallies: Sequence[CaseTally]) -> RepetitionSummary:
    rated = [t for t in tallies if t.scored]
    k = max((t.scored for t in rated), default=0)
    shares = np.array([t.passed / t.scored for t in rated], dtype=float)
    interval = None
    if len(shares):
        low, high = wilson_interval(float(shares.mean()), len(shares))
        interval = (round(low, 6), round(high, 6))
    # Cases with the same (repetitions, passes) share their estimates: at most a few
    # thousand distinct pairs, whatever the number of cases.
    # Every case counts for every k reported: up to the fewest repetitions a rated case has
    # (cases given more repetitions, the flaky ones, would otherwise decide the higher k alone).
    from scipy.special import comb  # (on first use: the process starts without scipy)

    common = min((t.scored for t in rated), default=0)
    tally = Counter((t.scored, t.passed) for t in rated)
    pairs = np.array(list(tally), dtype=float).reshape(-1, 2)
    weights = np.array(list(tally.values()), dtype=float)
    at: dict[int, float] = {}
    hat: dict[int, float] = {}
    for j in range(1, common + 1):
        n, c = pairs[:, 0], pairs[:, 1]
        at[j] = round(float(np.average(1 - comb(n - c, j) / comb(n, j), weights=weights)), 6)
        hat[j] = round(float(np.average(comb(c, j) / comb(n, j), weights=weights)), 6)
    flaky = [t for t in rated if 0 < t.passed < t.scored]
    return RepetitionSummary(
        k=k,
        pass_at_1=round(float(shares.mean()), 6) if len(shares) else None,
        pass_at_1_ci=interval,
        pass_at_k=at,
        pass_hat_k=hat,
        flaky=len(flaky),
        flaky_cases=[case_repetitions(t) for t in flaky[:FLAKY_LISTED]],
    )


def wilson_interval(share: float, cases: int) -> tuple[float, float]:
    """The Wilson score interval of a mean of `cases` shares (stats.CONFIDENCE).

    Each case's share of passing repetitions lies in [0, 1], so with mean p its variance is at
    most p (1 - p), a pass/fail case's: the score interval built on that variance holds for
    shares too (conservative by up to the square root of the repetitions, when cases differ
    little), is Wilson's own for pass/fail cases, and keeps a width at 0 and 1, where a
    bootstrap of ten cases all passing is [1, 1]."""
    z = NormalDist().inv_cdf(1.0 - (1.0 - stats.CONFIDENCE) / 2.0)
    shrink = 1.0 + z * z / cases
    centre = (share + z * z / (2 * cases)) / shrink
    half = z / shrink * math.sqrt(share * (1.0 - share) / cases + z * z / (4 * cases * cases))
    return max(0.0, centre - half), min(1.0, centre + half)


def _round(value: float | None, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None else None
