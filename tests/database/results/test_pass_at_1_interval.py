"""pass@1's interval in a run's summary: Wilson's score interval of the mean share (the
reference: statsmodels), which covers the true rate as often as it claims at ten cases and near
1, where a bootstrap of ten cases all passing was [1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from database.results.crud.figures import CaseTally
from database.results.summaries import summarise_repetitions
from utils import statistics as stats


def _interval(passes: list[int], repetitions: int) -> tuple[float, float]:
    tallies = [
        CaseTally(position=i, test_id=None, scored=repetitions, passed=passed, errored=0)
        for i, passed in enumerate(passes)
    ]
    found = summarise_repetitions(tallies).pass_at_1_ci
    assert found is not None
    return found


def test_ten_cases_passing_every_repetition_leave_room_below_1() -> None:
    low, high = _interval([3] * 10, 3)
    assert high == 1.0
    assert low == pytest.approx(proportion_confint(10, 10, method="wilson")[0], abs=1e-6)
    assert low < 0.75  # ten cases cannot show a rate above 72%, however many repetitions


@pytest.mark.parametrize(
    ("passes", "repetitions"),
    [([1] * 7 + [0] * 3, 1), ([0] * 12, 1), ([3, 2, 2, 1, 3, 0, 3, 3], 3), ([5] * 40 + [4], 5)],
)
def test_the_interval_is_wilsons_of_the_mean_share(passes: list[int], repetitions: int) -> None:
    """Pass/fail cases: Wilson's interval on the count; shares of repetitions: the same on the
    sum of the shares (statsmodels takes a count that is not whole)."""
    share_sum = sum(passes) / repetitions
    expected = proportion_confint(share_sum, len(passes), alpha=0.05, method="wilson")
    assert _interval(passes, repetitions) == pytest.approx(expected, abs=1e-6)


# Over 2,000 simulated runs the coverage seen has a standard error of 0.5 points at 95%; 3.5 of
# them (1.7 points) leave a false alarm about 1 in 4,000 per setting.
_SIMULATIONS, _TOLERANCE = 2000, 0.017


@pytest.mark.parametrize(
    ("cases", "rate", "spread"),
    [
        (10, 0.98, None),  # every case passes each repetition with chance 0.98
        (10, 0.98, 20.0),  # each case its own chance, Beta with mean 0.98 (a, b summing to 20)
        (10, 0.7, 4.0),
        (30, 0.9, None),
        (100, 0.5, 2.0),
        (100, 0.995, None),
    ],
)
def test_the_interval_covers_the_true_rate_95_times_in_100(
    cases: int, rate: float, spread: float | None
) -> None:
    rng = np.random.default_rng(int(cases * 1000 * rate))
    covered = 0
    for _ in range(_SIMULATIONS):
        chances = (
            np.full(cases, rate)
            if spread is None
            else rng.beta(rate * spread, (1 - rate) * spread, cases)
        )
        low, high = _interval(rng.binomial(3, chances).tolist(), 3)
        covered += low <= rate <= high
    assert covered / _SIMULATIONS >= stats.CONFIDENCE - _TOLERANCE
