"""utils.sign_flips.sign_flip_test, the paired randomization test of a mean difference, against
scipy.stats.permutation_test (permutation_type='samples': the reference), against the exact law
of the signed sum computed here by convolution where the differences lie on a lattice, and by
simulation: its level when nothing changed, and its direction where a sign test of counts of
cases points away from the mean."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from utils.sign_flips import SIGN_FLIP_EXACT, SIGN_FLIP_NORMAL, SIGN_FLIPS, sign_flip_test
from utils.statistics import sign_test

SHARES = np.array([-1, -2 / 3, -1 / 2, -1 / 3, 0, 1 / 3, 1 / 2, 2 / 3, 1])


def _permutation_p(differences: np.ndarray, **options) -> float:
    result = stats.permutation_test(
        (differences,), np.mean, permutation_type="samples", vectorized=True, **options
    )
    return float(result.pvalue)


class ExactLaw:
    """The exact law of sum(s_i d_i) over fair signs s_i, for differences that are multiples of
    `unit`: by convolution on the lattice, one difference at a time. It depends on the sizes
    of the differences only: p() takes any signs of them."""

    def __init__(self, differences: np.ndarray, unit: float) -> None:
        steps = np.rint(np.abs(differences[differences != 0]) / unit).astype(np.int64)
        self.unit, total = unit, int(steps.sum())
        law = np.zeros(2 * total + 1)
        law[total] = 1.0
        for step in steps.tolist():  # (the support stays within +-total: nothing wraps)
            law = 0.5 * (np.roll(law, step) + np.roll(law, -step))
        sizes = np.abs(np.arange(-total, total + 1))
        # The chance of a sum at least k steps from 0, for each k.
        self.tail = np.bincount(sizes, weights=law)[::-1].cumsum()[::-1]

    def p(self, differences: np.ndarray) -> float:
        return float(self.tail[abs(int(np.rint(differences.sum() / self.unit)))])


def _with_positive(magnitudes: np.ndarray, positive: int) -> np.ndarray:
    """The differences of these sizes, the first `positive` of them positive."""
    return magnitudes * np.where(np.arange(magnitudes.size) < positive, 1.0, -1.0)


def _near(law: ExactLaw, magnitudes: np.ndarray, target: float) -> tuple[np.ndarray, float]:
    """Signs of the magnitudes whose exact p is nearest `target`."""
    candidates = [_with_positive(magnitudes, k) for k in range(magnitudes.size + 1)]
    found = min(candidates, key=lambda differences: abs(law.p(differences) - target))
    return found, law.p(found)


def monte_carlo_error(p: float, draws: int = SIGN_FLIPS) -> float:
    return math.sqrt(p * (1 - p) / draws) + 1 / draws


# --- against references -----------------------------------------------------------------------


def test_up_to_twenty_differences_it_is_scipys_exact_permutation_test():
    rng = np.random.default_rng(11)
    for size in range(2, 18):
        graded = rng.normal(0.3, 1.0, size)
        shares = rng.choice(SHARES, size)  # ties: sums equal to the observed one, and zeros
        for differences in (graded, shares):
            expected = _permutation_p(differences, n_resamples=np.inf, batch=2**16)
            assert sign_flip_test(differences, seed=0) == pytest.approx(expected, abs=1e-12), (
                differences.tolist()
            )
    # At the threshold (scipy's 2^20 patterns would take seconds), the exact law: all of them.
    magnitudes = rng.choice(np.arange(1, 7) / 6, SIGN_FLIP_EXACT)
    law = ExactLaw(magnitudes, 1 / 6)
    for target in (0.01, 0.05, 0.2):
        differences, exact = _near(law, magnitudes, target)
        assert sign_flip_test(differences, seed=0) == pytest.approx(exact, abs=1e-12)


def test_zero_differences_do_not_count():
    # 12 changed cases among 300: exact over the 12, as scipy is when given only those.
    rng = np.random.default_rng(12)
    changed = rng.choice(SHARES[SHARES != 0], 12) + 0.2
    differences = np.concatenate([changed, np.zeros(288)])
    expected = _permutation_p(changed, n_resamples=np.inf)
    assert sign_flip_test(differences, seed=0) == pytest.approx(expected, abs=1e-12)
    assert sign_flip_test(np.zeros(50), seed=0) == 1.0
    assert sign_flip_test([], seed=0) == 1.0
    assert sign_flip_test([0.5, -0.5], seed=0) == 1.0  # a mean of zero
    with pytest.raises(ValueError):
        sign_flip_test([0.5, math.nan], seed=0)


@pytest.mark.parametrize("size", [SIGN_FLIP_EXACT + 1, 60, 400, SIGN_FLIP_NORMAL])
@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_between_it_draws_the_exact_law_withinmonte_carlo_error(size, target):
    # Shares of 2 or 3 repetitions: multiples of 1/6.
    magnitudes = np.random.default_rng(size).choice(np.arange(1, 7) / 6, size)
    law = ExactLaw(magnitudes, 1 / 6)
    differences, exact = _near(law, magnitudes, target)
    found = sign_flip_test(differences, seed=size)
    assert found == pytest.approx(exact, abs=4 * monte_carlo_error(exact))
    assert sign_flip_test(differences, seed=size) == found  # seeded: the same every time


def test_between_it_agrees_with_scipys_drawn_permutation_test():
    rng = np.random.default_rng(13)
    differences = rng.normal(0.25, 1.0, 40)
    reference = _permutation_p(differences, n_resamples=100_000, rng=np.random.default_rng(1))
    assert 0.002 < reference < 0.3, reference
    tolerance = 4 * math.sqrt(reference * (1 - reference) * (1 / SIGN_FLIPS + 1 / 100_000))
    for seed in (1, 2, 3):
        assert sign_flip_test(differences, seed=seed) == pytest.approx(reference, abs=tolerance)


def test_above_the_threshold_the_normal_law_is_the_exact_one():
    # Differences of 1/3, 2/3 and 1: the continuity correction is half a lattice step, and the
    # normal p within 2e-4 of the exact one over the p-values a verdict turns on. The sum grows
    # as more of the differences are positive.
    magnitudes = np.random.default_rng(14).choice([1 / 3, 2 / 3, 1], SIGN_FLIP_NORMAL + 1)
    law = ExactLaw(magnitudes, 1 / 3)
    checked = 0
    for positive in range(magnitudes.size // 2, magnitudes.size // 2 + 200):
        differences = _with_positive(magnitudes, positive)
        exact = law.p(differences)
        if 0.002 <= exact <= 0.3:
            assert sign_flip_test(differences, seed=0) == pytest.approx(exact, abs=2e-4)
            checked += 1
    assert checked >= 20


def test_above_the_threshold_off_the_lattice_it_is_conservative():
    # Differences of 1/3 and 1/2: the sum's steps are 1/3 apart, finer than the 2/3 that the
    # correction (the smallest difference) assumes: p is a little larger than the exact one.
    magnitudes = np.random.default_rng(15).choice([1 / 3, 1 / 2], SIGN_FLIP_NORMAL + 1)
    law = ExactLaw(magnitudes, 1 / 6)
    checked = 0
    for positive in range(magnitudes.size // 2, magnitudes.size // 2 + 200):
        differences = _with_positive(magnitudes, positive)
        exact = law.p(differences)
        if 0.002 <= exact <= 0.3:
            assert exact - 2e-4 <= sign_flip_test(differences, seed=0) <= exact + 0.01
            checked += 1
    assert checked >= 20


# --- by simulation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cases", "fewest", "most"),
    [
        (24, 1, SIGN_FLIP_NORMAL),  # mostly exact
        (300, SIGN_FLIP_EXACT + 1, SIGN_FLIP_NORMAL),  # drawn
        (2400, SIGN_FLIP_NORMAL + 1, None),  # normal
    ],
)
def test_when_nothing_changed_it_rejects_at_most_alpha_of_the_time(cases, fewest, most):
    # Each case's pass probability is the same on both sides; each side passes Binomial(3, p)
    # of 3 repetitions, so a case's difference is a multiple of 1/3.
    trials = 2000
    rng = np.random.default_rng(cases)
    rejected = 0
    for trial in range(trials):
        probability = 0.1 + 0.8 * rng.beta(2.0, 2.0, cases)
        differences = (rng.binomial(3, probability) - rng.binomial(3, probability)) / 3
        changed = int(np.count_nonzero(differences))
        assert fewest <= changed and (most is None or changed <= most), changed
        rejected += sign_flip_test(differences, seed=trial) < 0.05
    # One-sided: the level plus 2.33 standard errors of its estimate (1% to fail by chance).
    rate = rejected / trials
    assert rate <= 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / trials), f"rejected {rate:.1%}"


def test_it_follows_the_mean_where_a_sign_test_of_cases_points_away():
    # 40 cases one repetition in ten better, 12 cases broken: the mean regressed. The sign test
    # counts 40 cases up against 12 down; the sign-flip test weighs them.
    slightly_better, broken = np.full(40, 0.1), np.full(12, -1.0)
    differences = np.concatenate([slightly_better, broken, np.zeros(148)])
    assert differences.mean() < 0
    assert sign_test(40, 12) < 0.001
    p = sign_flip_test(differences, seed=3)
    reference = ExactLaw(differences, 0.1).p(differences)
    assert p == pytest.approx(reference, abs=4 * monte_carlo_error(reference))
    assert p < 0.05
    # The same counts with a third better on each of the 40: that outweighs the 12 broken
    # (40/3 > 12), a mean change near zero that the test of the mean does not call.
    balanced = np.concatenate([np.full(40, 1 / 3), broken, np.zeros(148)])
    assert balanced.mean() > 0
    assert sign_flip_test(balanced, seed=3) > 0.5
    # And 30 broken: a regression the sign test (40 up, 30 down) misses.
    regressed = np.concatenate([np.full(40, 1 / 3), np.full(30, -1.0), np.zeros(130)])
    assert sign_test(40, 30) > 0.2
    assert sign_flip_test(regressed, seed=3) < 0.01


def test_a_hundred_thousand_cases_take_milliseconds():
    rng = np.random.default_rng(16)
    differences = rng.choice(SHARES, 100_000, p=[0.04, 0.04, 0.02, 0.1, 0.6, 0.1, 0.02, 0.04, 0.04])
    started = time.process_time()  # CPU, not wall time: a busy machine's other work not counted
    sign_flip_test(differences, seed=0)
    assert time.process_time() - started < 0.1
