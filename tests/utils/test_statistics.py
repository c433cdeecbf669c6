"""utils.statistics against reference implementations (statsmodels, scipy, exact fractions,
naive bootstraps) and, by simulation, the calibration of its intervals and verdicts."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from utils.pass_estimators import pass_at_k, pass_hat_k
from utils.sign_flips import sign_flip_test
from utils.statistics import (
    PairedBootstrap,
    _resample_quantiles,
    cases_to_show_equivalence,
    holm,
    quantile,
    seed_for,
    share_upper_bound,
    sign_test,
    signed_rank_balance,
    signed_rank_test,
    verdict,
)

# --- tests on counts and p-values ---------------------------------------------------------


def test_sign_test_is_mcnemars_exact_test():
    discordant = [(b, c) for b in range(31) for c in range(31)]
    discordant += [(400, 350), (0, 60), (60, 0), (1000, 1000), (512, 430), (1001, 1000)]
    discordant += [(5200, 5000), (40000, 39500), (39500, 40000), (30000, 30000)]
    for b, c in discordant:
        expected = mcnemar([[17, b], [c, 5]], exact=True).pvalue
        assert sign_test(b, c) == pytest.approx(expected, abs=1e-9), (b, c)


def test_sign_test_without_discordant_pairs_is_one():
    assert sign_test(0, 0) == 1.0


def test_signed_rank_test_is_scipys_wilcoxon():
    rng = np.random.default_rng(7)
    for size in (12, 40, 300):  # exact and normal-approximation paths
        differences = rng.normal(0.2, 1.0, size)
        assert signed_rank_test(differences) == pytest.approx(
            stats.wilcoxon(differences).pvalue, abs=1e-12
        )


def test_signed_rank_test_drops_zero_differences():
    rng = np.random.default_rng(8)
    differences = np.round(rng.normal(0.3, 1.0, 40), 1)
    differences[:6] = 0.0
    expected = stats.wilcoxon(differences[differences != 0]).pvalue
    assert signed_rank_test(differences) == pytest.approx(expected, abs=1e-12)


def _sign_flip_p(differences: np.ndarray) -> float:
    """The exact two-sided p of the signed-rank statistic: every sign of the nonzero
    differences, equally likely under the null (ties keep their average ranks)."""
    nonzero = differences[differences != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    observed = abs(ranks[nonzero > 0].sum() - ranks.sum() / 2)
    signs = np.array(list(itertools.product((0, 1), repeat=nonzero.size)), dtype=bool)
    sums = (signs * ranks).sum(axis=1)
    return float(np.mean(np.abs(sums - ranks.sum() / 2) >= observed - 1e-9))


@pytest.mark.parametrize("changed", [4, 5, 7, 9, 12])
def test_signed_rank_test_of_a_few_changes_among_many_zeros_is_exact(changed):
    # Most cases of a comparison do not move: the test is of the ones that did.
    rng = np.random.default_rng(changed)
    differences = np.zeros(100)
    differences[:changed] = rng.choice([0.25, 0.5, -0.25], changed)  # graded: ties
    assert signed_rank_test(differences) == pytest.approx(_sign_flip_p(differences), abs=1e-12)


@pytest.mark.parametrize("differences", [np.zeros(25), np.zeros(0)])
def test_signed_rank_test_without_nonzero_differences_is_one(differences):
    assert signed_rank_test(differences) == 1.0


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(11)
    vectors = [rng.uniform(0, 0.2, size) for size in (1, 2, 3, 7, 20)]
    vectors += [rng.uniform(0, 1, 10), np.array([0.01, 0.01, 0.04, 0.5, 0.5])]
    for p in vectors:
        expected = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm(list(p)), expected, rtol=0, atol=1e-15)


def test_holm_leaves_nan_out_of_the_family():
    p = [0.01, math.nan, 0.04, 0.03, math.nan]
    adjusted = holm(p)
    assert math.isnan(adjusted[1]) and math.isnan(adjusted[4])
    expected = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    np.testing.assert_allclose([adjusted[0], adjusted[2], adjusted[3]], expected, atol=1e-15)
    assert holm([]) == []
    assert all(math.isnan(x) for x in holm([math.nan, math.nan]))


def test_pass_at_k_is_the_unbiased_estimator():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(expected), abs=1e-12)
                if n - c < k:
                    assert pass_at_k(n, c, k) == 1.0
                if c == 0:  # none passed: 0, not -0.0 (which JSON shows as such)
                    assert math.copysign(1.0, pass_at_k(n, c, k)) == 1.0


def test_pass_hat_k_is_the_unbiased_estimator():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = Fraction(math.comb(c, k), math.comb(n, k))
                assert pass_hat_k(n, c, k) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 2, 0), (5, 2, 6), (5, 6, 1), (5, -1, 1)])
def test_pass_estimators_refuse_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
    with pytest.raises(ValueError):
        pass_hat_k(n, c, k)


# --- quantiles, verdicts, seeds ----------------------------------------------------------


def test_quantile_is_the_inverted_cdf():
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0  # smallest value with share >= 0.5
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.51) == 3.0
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.0) == 1.0
    assert quantile([4.0, 1.0, 3.0, 2.0], 1.0) == 4.0
    assert math.isnan(quantile([], 0.5))


def test_resampled_quantiles_follow_the_same_convention_exactly():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 7, 10, 20, 33):
        values = np.round(rng.normal(size=n), 1)  # ties included
        qs = sorted({0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0, *(j / n for j in range(n + 1))})
        indices = rng.integers(0, n, size=(50, n))
        got = _resample_quantiles(indices, values, qs)
        for r in range(len(indices)):
            expected = np.quantile(values[indices[r]], qs, method="inverted_cdf")
            np.testing.assert_array_equal(got[r], expected, err_msg=f"n={n}, row {r}")


@pytest.mark.parametrize(
    "low, high, p, expected",
    [
        (-0.01, 0.015, 0.2, "equivalent"),
        (-0.02, 0.02, 0.001, "equivalent"),  # the bounds are inside
        (0.01, 0.08, 0.001, "improved"),
        (-0.08, -0.01, 0.001, "regressed"),
        (0.01, 0.08, 0.05, "inconclusive"),  # p must be below alpha
        (-0.01, 0.08, 0.001, "inconclusive"),  # interval crosses zero
        (-0.03, 0.01, 0.2, "inconclusive"),
        (math.nan, math.nan, 0.001, "inconclusive"),
        (0.01, 0.08, math.nan, "inconclusive"),
    ],
)
def test_verdict(low, high, p, expected):
    assert verdict(low, high, p, min_effect=0.02, cases=1000) == expected


def test_equivalence_needs_enough_cases_to_bound_what_was_not_seen():
    # With n cases and none changed, the exact 97.5% bound on the share that could change is
    # 1 - 0.025 ** (1 / n): at most 2 points from 183 cases on, not before.
    assert cases_to_show_equivalence(0.02) == 183
    assert 1 - 0.025 ** (1 / 183) <= 0.02 < 1 - 0.025 ** (1 / 182)
    assert cases_to_show_equivalence(0.10) == 36
    assert verdict(0.0, 0.0, 1.0, min_effect=0.02, cases=6) == "inconclusive"
    assert verdict(0.0, 0.0, 1.0, min_effect=0.02, cases=182) == "inconclusive"
    assert verdict(0.0, 0.0, 1.0, min_effect=0.02, cases=183) == "equivalent"


@pytest.mark.parametrize("min_effect", [0.0, 1e-310, 5e-324])
def test_a_margin_no_number_of_cases_can_show_is_never_equivalent(min_effect):
    # 1e-310 is above zero, but log1p of its negation is too small to divide by.
    assert cases_to_show_equivalence(min_effect) == math.inf
    assert verdict(0.0, 0.0, 1.0, min_effect=min_effect, cases=10**9) == "inconclusive"


def test_seed_for_is_stable_and_order_sensitive():
    seed = seed_for("run-a", "run-b")
    # A fixed value: the seed must not change between processes, platforms or releases.
    assert seed == 5366493654450792890
    assert 0 <= seed < 2**63
    assert seed_for("run-b", "run-a") != seed
    assert seed_for("ab", "") != seed_for("a", "b")


# --- the bootstrap -----------------------------------------------------------------------


def _naive_mean_interval(values, seed, resamples=2000, confidence=0.95):
    rng = np.random.default_rng(seed)
    means = [values[rng.choice(len(values), len(values))].mean() for _ in range(resamples)]
    tail = (1 - confidence) / 2
    return np.quantile(means, [tail, 1 - tail])


def _naive_quantile_delta_interval(baseline, candidate, q, seed, resamples=2000):
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(resamples):
        i = rng.choice(len(baseline), len(baseline))
        deltas.append(
            np.quantile(candidate[i], q, method="inverted_cdf")
            - np.quantile(baseline[i], q, method="inverted_cdf")
        )
    return np.quantile(deltas, [0.025, 0.975])


def test_bootstrap_is_deterministic_for_a_seed():
    values = np.random.default_rng(1).normal(size=(500, 2))
    bootstrap = PairedBootstrap(500, seed=42, resamples=700)
    first = bootstrap.mean_intervals(values)
    bootstrap.quantile_delta_intervals(values[:, 0], values[:, 1], [0.5])
    np.testing.assert_array_equal(bootstrap.mean_intervals(values), first)
    np.testing.assert_array_equal(
        PairedBootstrap(500, seed=42, resamples=700).mean_intervals(values), first
    )
    other = PairedBootstrap(500, seed=43, resamples=700).mean_intervals(values)
    assert not np.array_equal(other, first)


@pytest.mark.parametrize("shape", ["shares", "lognormal", "sparse"])
def test_mean_intervals_are_scipys_bca_intervals(shape: str):
    """Against scipy.stats.bootstrap's default (BCa), within Monte Carlo error. On sparse
    values (ten cases of 300 each losing two repetitions of three) the percentile interval's
    low end falls short on the long tail's side: it called a regression at the margin
    equivalent in 9% of trials."""
    rng = np.random.default_rng(2)
    values = {
        "shares": rng.integers(-3, 4, 300) / 3,
        "lognormal": rng.lognormal(0.0, 1.0, 300),
        # (jittered: a resample's mean equal to the observed one is a tie, which scipy tells
        # apart by the rounding of its own sums, and the service by a tolerance)
        "sparse": np.r_[np.zeros(290), np.full(10, -2 / 3)] + rng.normal(0.0, 1e-9, 300),
    }[shape]
    got = PairedBootstrap(300, seed=3, resamples=10_000).mean_intervals(values)
    assert got.shape == (1, 2)
    reference = stats.bootstrap(
        (values,), np.mean, method="BCa", n_resamples=10_000, random_state=4
    ).confidence_interval
    expected = np.array([reference.low, reference.high])
    width = expected[1] - expected[0]
    np.testing.assert_allclose(got[0], expected, atol=0.03 * width)
    if shape == "sparse":
        percentile = _naive_mean_interval(values, seed=4)
        assert got[0][0] < percentile[0] - 0.05 * width


def test_quantile_delta_intervals_agree_with_a_naive_paired_bootstrap():
    rng = np.random.default_rng(6)
    baseline = rng.lognormal(0.0, 0.5, 300)
    candidate = 0.8 * baseline + rng.normal(0.0, 0.05, 300)
    got = PairedBootstrap(300, seed=7).quantile_delta_intervals(baseline, candidate, [0.5, 0.9])
    assert got.shape == (2, 2)
    for row, q in zip(got, [0.5, 0.9], strict=True):
        expected = _naive_quantile_delta_interval(baseline, candidate, q, seed=8)
        # Monte Carlo noise only; resampling the two sides apart would be about 2.5x as wide.
        width = expected[1] - expected[0]
        np.testing.assert_allclose(row, expected, atol=0.15 * width, err_msg=f"q={q}")


def test_columns_are_the_same_as_one_dimensional_calls():
    values = np.random.default_rng(9).normal(size=(400, 3))
    bootstrap = PairedBootstrap(400, seed=10, resamples=1001)  # a partial last block
    together = bootstrap.mean_intervals(values)
    assert together.shape == (3, 2)
    for j in range(3):
        np.testing.assert_allclose(together[j], bootstrap.mean_intervals(values[:, j])[0])


def test_bootstrap_of_no_cases_is_nan_and_of_one_case_is_degenerate():
    empty = PairedBootstrap(0, seed=1)
    assert np.isnan(empty.mean_intervals(np.zeros((0, 3)))).all()
    assert empty.mean_intervals(np.zeros((0, 3))).shape == (3, 2)
    assert np.isnan(empty.mean_intervals(np.zeros(0))).all()
    assert empty.quantile_delta_intervals([], [], [0.5, 0.9]).shape == (2, 2)
    assert np.isnan(empty.quantile_delta_intervals([], [], [0.5, 0.9])).all()
    single = PairedBootstrap(1, seed=1)
    np.testing.assert_array_equal(single.mean_intervals([4.0]), [[4.0, 4.0]])
    np.testing.assert_array_equal(single.quantile_delta_intervals([2.0], [5.0], [0.5]), [[3, 3]])


def test_bootstrap_refuses_bad_input():
    bootstrap = PairedBootstrap(3, seed=1)
    with pytest.raises(ValueError):
        bootstrap.mean_intervals([1.0, math.nan, 2.0])
    with pytest.raises(ValueError):
        bootstrap.mean_intervals(np.zeros(6))
    with pytest.raises(ValueError):
        bootstrap.quantile_delta_intervals([1.0, 2.0, 3.0], [1.0, 2.0], [0.5])
    with pytest.raises(ValueError):
        bootstrap.quantile_delta_intervals([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.5])


# --- calibration by simulation -----------------------------------------------------------

CASES, ATTEMPTS, TRIALS = 200, 3, 400


def _case_probabilities(rng, size):
    """Pass probabilities of cases drawn from a fixed population: 0.1 + 0.8 * Beta(2, 2)."""
    return 0.1 + 0.8 * rng.beta(2.0, 2.0, size=size)


def test_mean_interval_covers_the_true_effect_at_its_confidence():
    # Each trial draws fresh cases from one population. A case's candidate probability is its
    # baseline probability plus an effect uniform on [-0.10, -0.02], never leaving [0, 1]
    # (no clipping), so the population mean of the per-case delta is exactly -0.06: the
    # quantity the interval on the mean delta of the sampled cases estimates.
    true_effect = -0.06
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(TRIALS):
        baseline_p = _case_probabilities(rng, CASES)
        candidate_p = baseline_p + rng.uniform(-0.10, -0.02, CASES)
        deltas = (rng.binomial(ATTEMPTS, candidate_p) - rng.binomial(ATTEMPTS, baseline_p)) / (
            ATTEMPTS
        )
        bootstrap = PairedBootstrap(CASES, seed=trial, resamples=1000)
        low, high = bootstrap.mean_intervals(deltas)[0]
        covered += low <= true_effect <= high
    coverage = covered / TRIALS
    assert 0.93 <= coverage <= 0.97, f"95% intervals covered the true effect {coverage:.1%}"


def test_without_an_effect_few_verdicts_declare_a_change():
    # Three independent metrics per trial, candidate and baseline from the same distribution:
    # every 'improved' or 'regressed' is a false declaration.
    rng = np.random.default_rng(1)
    declared = 0
    any_declared = [False] * TRIALS
    for trial in range(TRIALS):
        probabilities = _case_probabilities(rng, (CASES, 3))
        deltas = (
            rng.binomial(ATTEMPTS, probabilities) - rng.binomial(ATTEMPTS, probabilities)
        ) / ATTEMPTS
        intervals = PairedBootstrap(CASES, seed=trial, resamples=1000).mean_intervals(deltas)
        p_values = [sign_flip_test(d, seed=trial) for d in deltas.T]
        for (low, high), p_adjusted in zip(intervals, holm(p_values), strict=True):
            decision = verdict(low, high, p_adjusted, min_effect=0.02, cases=CASES)
            declared_here = decision in ("improved", "regressed")
            declared += declared_here
            any_declared[trial] |= declared_here
    rate = declared / (TRIALS * 3)
    assert rate <= 0.05, f"{rate:.1%} of decisions declared a change where there is none"
    # After Holm, the chance that a trial declares any change at all stays at the nominal rate.
    family_rate = sum(any_declared) / TRIALS
    assert family_rate <= 0.05, f"{family_rate:.1%} of trials declared a change"


def test_a_change_just_beyond_the_margin_is_rarely_called_equivalent():
    # The true effect is -3 points, outside the 2-point margin: calling it 'equivalent' is the
    # error the margin exists to bound.
    rng = np.random.default_rng(2)
    equivalent = 0
    for trial in range(TRIALS):
        baseline_p = _case_probabilities(rng, 2000)
        candidate_p = baseline_p - 0.03
        deltas = (rng.binomial(1, np.clip(candidate_p, 0, 1)) - rng.binomial(1, baseline_p)).astype(
            float
        )
        low, high = PairedBootstrap(2000, seed=trial, resamples=1000).mean_intervals(deltas)[0]
        p = sign_test(int((deltas > 0).sum()), int((deltas < 0).sum()))
        equivalent += verdict(low, high, p, min_effect=0.02, cases=2000) == "equivalent"
    assert equivalent / TRIALS <= 0.05, f"{equivalent / TRIALS:.1%} called equivalent"


def test_share_upper_bound_is_the_exact_clopper_pearson_bound():
    for cases in (1, 2, 7, 50, 183, 999):
        for count in sorted({0, 1, 2, cases // 3, cases - 1, cases} & set(range(cases + 1))):
            reference = stats.binomtest(count, cases).proportion_ci(0.95, method="exact").high
            assert share_upper_bound(count, cases) == pytest.approx(reference, abs=1e-9)
    # No case seen: the bound cases_to_show_equivalence inverts (183 cases for 2 points).
    assert share_upper_bound(0, 183) <= 0.02 < share_upper_bound(0, 182)
    with pytest.raises(ValueError):
        share_upper_bound(3, 2)


def test_signed_rank_balance_leans_where_scipys_one_sided_test_does():
    rng = np.random.default_rng(8)
    for _ in range(200):
        differences = np.round(rng.normal(rng.normal(0, 0.3), 1, rng.integers(5, 40)), 1)
        if not differences.any():
            continue
        balance = signed_rank_balance(differences)
        nonzero = differences[differences != 0]
        less = stats.wilcoxon(nonzero, alternative="less").pvalue
        greater = stats.wilcoxon(nonzero, alternative="greater").pvalue
        assert np.sign(balance) == np.sign(less - greater), differences
