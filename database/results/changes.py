"""Beside a comparison's verdicts: which cases could be paired, the cases that flipped (with
both outputs), and the cost, token and latency deltas."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.comparison_schemas import Delta, Flip, Flips, ResultSide
from database.results.crud import flip_outputs
from database.results.crud.pairing import PairedCase
from database.results.models import Run
from utils import statistics as stats

LISTED = 100  # test ids listed of each kind of unpaired or changed case


def _delta(base: float, cand: float, bounds: Sequence[float] | None, digits: int = 6) -> Delta:
    return Delta(
        baseline=round(base, digits),
        candidate=round(cand, digits),
        delta=round(cand - base, digits),
        ci=(round(float(bounds[0]), digits), round(float(bounds[1]), digits))
        if bounds is not None
        else None,
    )


def mean_delta(a: np.ndarray, b: np.ndarray, bounds: tuple[float, float] | None) -> Delta:
    if not len(a):
        return Delta(baseline=None, candidate=None, delta=None, ci=None)
    return _delta(float(a.mean()), float(b.mean()), bounds)


def latency_deltas(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[Delta, Delta]:
    """The p50 and p95 of per-case latency, both sides, with paired bootstrap intervals."""
    if not len(a):
        empty = Delta(baseline=None, candidate=None, delta=None, ci=None)
        return empty, empty
    quantiles = (0.5, 0.95)
    bounds = stats.PairedBootstrap(len(a), seed=seed).quantile_delta_intervals(a, b, quantiles)
    p50, p95 = (
        _delta(stats.quantile(a, q), stats.quantile(b, q), found, digits=2)
        for q, found in zip(quantiles, bounds, strict=True)
    )
    return p50, p95


def _flipped(rated: Sequence[PairedCase]) -> list[tuple[PairedCase, float, float]]:
    """The cases that pass on one side only, with both sides' pass shares."""
    flipped = []
    for case in rated:
        base, cand = case.share("baseline"), case.share("candidate")
        assert base is not None and cand is not None
        if (base >= 0.5) != (cand >= 0.5):
            flipped.append((case, base, cand))
    return flipped


async def flips(
    session: AsyncSession,
    baseline: Run,
    candidate: Run,
    rated: Sequence[PairedCase],
    limit: int,
    offset: int,
) -> Flips:
    flipped = await asyncio.to_thread(_flipped, rated)
    page = flipped[offset : offset + limit]
    outputs = await flip_outputs.flip_outputs(
        session,
        baseline,
        candidate,
        [flip_outputs.Flipped(case.key, base >= 0.5, *case.positions) for case, base, _ in page],
    )

    def side(key: str, is_candidate: bool) -> ResultSide | None:
        found = outputs.get((key, is_candidate))
        if found is None:
            return None
        return ResultSide(
            result_id=found.result_id,
            status=found.status,
            output=found.output,
            output_truncated=found.truncated,
        )

    return Flips(
        pass_to_fail=sum(base >= 0.5 for _, base, _ in flipped),
        fail_to_pass=sum(base < 0.5 for _, base, _ in flipped),
        items=[
            Flip(
                test_id=case.test_id,
                direction="pass_to_fail" if base >= 0.5 else "fail_to_pass",
                baseline_pass_share=round(base, 6),
                candidate_pass_share=round(cand, 6),
                baseline=side(case.key, False),
                candidate=side(case.key, True),
            )
            for case, base, cand in page
        ],
        limit=limit,
        offset=offset,
    )
