"""A large comparison's slices: their intervals are the normal ones the whole comparison gets
from LARGE_N cases, drawing no bootstrap of their own (a slice of each size was one, up to 150
of them), and those intervals cover as often as they claim, checked by simulation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from database.results import comparison, paired_tests
from database.results.crud.case_columns import CaseSlices, PairedColumns, SideColumns
from database.test_sets.slice_index import SLICES
from utils import statistics as stats


class _Ids:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def keys(self, which: np.ndarray) -> list[str]:
        return [str(i) for i in which.tolist()]

    def test_ids(self, which: np.ndarray) -> list[uuid.UUID | None]:
        return [None] * len(which)


def _side(rng: np.random.Generator, n: int, pass_share: float) -> SideColumns:
    return SideColumns(
        scored=np.full(n, 3.0),
        passed=rng.binomial(3, pass_share, n).astype(float),
        errored=np.zeros(n),
        latency=rng.lognormal(5, 0.5, n),
        cost=np.full(n, 0.001),
        tokens=np.full(n, 30.0),
        position=np.arange(n),
        present=np.ones(n, dtype=bool),
    )


def _distinct_sizes(n: int, values: int, rng: np.random.Generator) -> np.ndarray:
    """Each case's code among `values` groups of distinct sizes (n / values, give or take)."""
    sizes = np.arange(values) + n // values - values // 2
    sizes[-1] += n - sizes.sum()
    codes = np.repeat(np.arange(values), sizes)
    rng.shuffle(codes)
    return codes


def test_a_large_comparisons_slices_draw_no_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    n, values = stats.LARGE_N, 40
    rng = np.random.default_rng(3)
    slices = CaseSlices(
        values={field: [f"{field} {i}" for i in range(values)] for field in SLICES},
        codes={field: _distinct_sizes(n, values, rng) for field in SLICES},
    )
    cases = PairedColumns(
        _Ids(n), _side(rng, n, 0.8), _side(rng, n, 0.78), slices, np.zeros(n, dtype=bool)
    )
    drawn: list[int] = []
    draw = stats.PairedBootstrap._indices

    def counted(self: stats.PairedBootstrap) -> Iterator[np.ndarray]:
        drawn.append(self.n)
        yield from draw(self)

    monkeypatch.setattr(stats.PairedBootstrap, "_indices", counted)
    usable = np.arange(n)
    found = comparison._analyse(
        cases,
        usable,
        comparison._by_case(cases, usable, seed=1),
        {},
        1,
        comparison.CompareOptions(),
    )
    assert len(found["slices"]) == len(SLICES) * values
    assert all(piece.pass_rate.ci is not None for piece in found["slices"])
    assert drawn == []  # the sizes of the cases resampled: none


# Simulated comparisons: each case passes each of three repetitions with its own chance
# p ~ Beta(4, 1.5), and the candidate with 0.9 p, so the true mean change is -0.1 E[p].
_REPETITIONS, _SIMULATIONS = 3, 1000
_TRUE_DELTA = -0.1 * 4 / 5.5
# The coverage seen over 1,000 simulations has a standard error of 0.7 points at 95%; 3.5 of
# them (2.4 points) leave a false alarm about 1 in 4,000.
_TOLERANCE = 0.024


def _simulated_deltas(rng: np.random.Generator, n: int) -> np.ndarray:
    chance = rng.beta(4, 1.5, n)
    baseline = rng.binomial(_REPETITIONS, chance) / _REPETITIONS
    candidate = rng.binomial(_REPETITIONS, 0.9 * chance) / _REPETITIONS
    return candidate - baseline


def _covers(deltas: np.ndarray, *, normal: bool, seed: int) -> bool:
    intervals = paired_tests.Intervals(seed)
    intervals.add(deltas, normal=normal)
    found = intervals.compute()[0]
    assert found is not None
    return found[0] <= _TRUE_DELTA <= found[1]


@pytest.mark.parametrize("cases", [50, 300, 2000])
def test_a_slices_normal_interval_covers_the_true_change_95_times_in_100(cases: int) -> None:
    rng = np.random.default_rng(cases)
    covered = sum(
        _covers(_simulated_deltas(rng, cases), normal=True, seed=seed)
        for seed in range(_SIMULATIONS)
    )
    assert abs(covered / _SIMULATIONS - stats.CONFIDENCE) <= _TOLERANCE


def test_a_small_slices_normal_interval_covers_as_often_as_the_bootstrap() -> None:
    """Ten cases are too few for either interval to reach 95%: the normal one must miss no
    more often than the bootstrap it replaces, on the same simulated comparisons (the two
    counts are paired, and differ by a few datasets when they agree)."""
    rng = np.random.default_rng(10)
    normal = bootstrap = 0
    for seed in range(_SIMULATIONS):
        deltas = _simulated_deltas(rng, 10)
        normal += _covers(deltas, normal=True, seed=seed)
        bootstrap += _covers(deltas, normal=False, seed=seed)
    assert normal / _SIMULATIONS >= bootstrap / _SIMULATIONS - 0.01
    assert normal / _SIMULATIONS >= stats.CONFIDENCE - 0.1
