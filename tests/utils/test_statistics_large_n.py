"""The large-n intervals of utils.statistics (n >= LARGE_N) against reference bootstraps drawn
here with plain numpy (or exactly, where the bootstrap law has a closed form), and by
simulation: their coverage of known population means.

Tolerances are Monte Carlo errors, derived where they are used: the large-n methods must be
indistinguishable from the 2,000-resample percentile bootstrap they stand in for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from utils import banded_quantiles
from utils.banded_quantiles import Band, banded_quantile_deltas, order_statistic, stable_ranks
from utils.statistics import LARGE_N, RESAMPLES, PairedBootstrap

N = LARGE_N + 1  # just above the threshold, where the approximations are at their weakest
TAILS = (0.025, 0.975)
# The standard error of a 2,000-resample percentile endpoint, in units of the bootstrap
# distribution's sd when that distribution is normal: sqrt(p (1 - p) / B) / phi(z_p).
ENDPOINT_SE = math.sqrt(0.025 * 0.975 / RESAMPLES) / stats.norm.pdf(stats.norm.ppf(0.975))


def _tied_scores(rng: np.random.Generator, size: int) -> np.ndarray:
    """Eighths with most of the mass at 0 and 1: heavy ties, skewed."""
    weights = np.array([40, 2, 2, 2, 4, 2, 2, 2, 44], dtype=float)
    return rng.choice(9, size=size, p=weights / weights.sum()) / 8


def _share_deltas(rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-case deltas of binary outcomes: few cases change, mostly one way."""
    return rng.choice([-1.0, 0.0, 1.0], size=size, p=[0.01, 0.96, 0.03])


SAMPLES = {
    "binary p=0.02": lambda rng: (rng.random(N) < 0.02).astype(float),
    "binary p=0.5": lambda rng: (rng.random(N) < 0.5).astype(float),
    "beta(0.5, 5)": lambda rng: rng.beta(0.5, 5.0, N),
    "tied eighths": lambda rng: _tied_scores(rng, N),
    "share deltas": lambda rng: _share_deltas(rng, N),
}


def _reference_mean_percentiles(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The 2.5% and 97.5% percentiles of the bootstrap law of the mean: for values with few
    distinct levels, the resample's level counts are exactly multinomial (200,000 resamples,
    cheap: within 0.1 ENDPOINT_SE); otherwise 6,000 resamples of n indices (within 0.6)."""
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) <= 16:
        drawn = rng.multinomial(len(values), counts / len(values), size=200_000)
        means = drawn @ levels / len(values)
    else:
        means = np.concatenate(
            [
                values[rng.integers(0, len(values), (200, len(values)))].mean(axis=1)
                for _ in range(30)
            ]
        )
    return np.quantile(means, TAILS)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_normal_mean_interval_is_the_bootstrap_percentile_interval(name):
    rng = np.random.default_rng(sorted(SAMPLES).index(name))
    values = SAMPLES[name](rng)
    low, high = PairedBootstrap(N, seed=5).mean_intervals(values)[0]
    expected = _reference_mean_percentiles(values, rng)
    sd = values.std() / math.sqrt(N)  # the bootstrap law's sd
    # Three standard errors of a 2,000-resample endpoint: what the plain bootstrap itself
    # would wander by from one seed to the next; the reference's own error is at most 0.6 of one.
    tolerance = 3 * ENDPOINT_SE * sd
    assert abs(low - expected[0]) <= tolerance, (name, low, expected[0], tolerance)
    assert abs(high - expected[1]) <= tolerance, (name, high, expected[1], tolerance)


def test_the_normal_mean_interval_never_leaves_the_range_of_a_resampled_mean():
    values = np.zeros(N)
    values[:3] = 1.0  # three improved cases: the normal interval would go below 0
    low, high = PairedBootstrap(N, seed=1).mean_intervals(values)[0]
    assert low == 0.0
    assert high == pytest.approx(3 / N + stats.norm.ppf(0.975) * values.std() / math.sqrt(N))
    assert np.array_equal(PairedBootstrap(N, seed=1).mean_intervals(np.zeros(N)), [[0.0, 0.0]])


POPULATIONS = {
    # (draw n values, their population mean)
    "binary p=0.02": (lambda rng, size: (rng.random(size) < 0.02).astype(float), 0.02),
    "beta(0.5, 5)": (lambda rng, size: rng.beta(0.5, 5.0, size), 0.5 / 5.5),
    "share deltas": (_share_deltas, 0.02),
}


@pytest.mark.parametrize("name", list(POPULATIONS))
def test_the_normal_mean_interval_covers_the_population_mean_at_its_confidence(name):
    draw, true_mean = POPULATIONS[name]
    rng = np.random.default_rng(100 + sorted(POPULATIONS).index(name))
    trials, covered = 1000, 0
    for _ in range(4):  # 250 trials at a time, as columns: 40 MB
        samples = draw(rng, (N, trials // 4))
        intervals = PairedBootstrap(N, seed=0).mean_intervals(samples)
        covered += int(((intervals[:, 0] <= true_mean) & (true_mean <= intervals[:, 1])).sum())
    coverage = covered / trials
    # 1,000 trials: the standard error of a 95% coverage is 0.7 point; 0.93-0.97 is ~3 of them.
    assert 0.93 <= coverage <= 0.97, f"{name}: 95% intervals covered the mean {coverage:.1%}"


# --- quantile deltas -----------------------------------------------------------------------


def _latencies(rng: np.random.Generator, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """Paired latencies: a case's two sides share its difficulty; the candidate is ~5% slower
    with a heavier tail. With ties, whole milliseconds."""
    difficulty = rng.lognormal(4.5, 0.6, N)
    baseline = difficulty * rng.lognormal(0.0, 0.25, N)
    candidate = difficulty * 1.05 * rng.lognormal(0.0, 0.3, N)
    if ties:
        return np.round(baseline), np.round(candidate)
    return baseline, candidate


def _plain_quantile_deltas(base, cand, q, rng, resamples):
    """quantile(cand) - quantile(base) of resamples of n case indices, with plain numpy."""
    deltas = []
    for start in range(0, resamples, 100):
        i = rng.integers(0, N, (min(100, resamples - start), N))
        deltas.append(
            np.quantile(cand[i], q, axis=1, method="inverted_cdf")
            - np.quantile(base[i], q, axis=1, method="inverted_cdf")
        )
    return np.concatenate(deltas)


@pytest.mark.parametrize("ties", [False, True])
def test_banded_quantile_deltas_follow_the_law_of_the_plain_bootstrap(ties):
    rng = np.random.default_rng(21 + ties)
    base, cand = _latencies(rng, ties)
    quantiles = (0.5, 0.95)
    banded = banded_quantile_deltas(base, cand, quantiles, 3, RESAMPLES)
    assert banded is not None
    intervals = PairedBootstrap(N, seed=3).quantile_delta_intervals(base, cand, quantiles)
    for j, q in enumerate(quantiles):
        plain = _plain_quantile_deltas(base, cand, q, rng, RESAMPLES)
        # The same law: a two-sample test on 2,000 draws each sees no difference (it detects
        # a shift of ~0.15 sd; the seeds are fixed, so this is not a flaky 1-in-1,000).
        assert stats.ks_2samp(banded[:, j], plain).pvalue > 0.001, q
        assert stats.mannwhitneyu(banded[:, j], plain).pvalue > 0.001, q
        # The endpoints, distribution-free: each is the p-th percentile of 2,000 draws, whose
        # rank in the law has sd sqrt(p (1 - p) / 2000); against the plain draws' own empirical
        # law (the same error again), four such sds either way.
        for endpoint, p in zip(intervals[j], TAILS, strict=True):
            spread = 4 * math.sqrt(p * (1 - p) * 2 / RESAMPLES)
            low, high = np.quantile(plain, [max(p - spread, 0), min(p + spread, 1)])
            assert low <= endpoint <= high, (q, p, endpoint, low, high)
    assert not np.allclose(banded[:, 0], banded[0, 0])  # the resamples do vary


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_each_sides_quantile_has_the_exact_law_of_a_resampled_order_statistic(q):
    # The r-th smallest of n uniform draws of ranks 0..n-1 is <= k exactly when at least r
    # draws are <= k: P = P(Binomial(n, (k + 1) / n) >= r). Each side's drawn quantile rank
    # must follow that law (the baseline's ranks shuffled against the candidate's, so the
    # band holds cases of both sides).
    rng = np.random.default_rng(50)
    ranks = (np.arange(N), rng.permutation(N))
    r = order_statistic(N, q)
    band, draws = Band(tuple(stable_ranks(side.astype(float)) for side in ranks), r), 20_000
    found = [band.draw(rng, 100) for _ in range(draws // 100)]
    assert all(pair is not None for pair in found)
    for side in range(2):
        drawn = np.concatenate([ranks[side][pair[side]] for pair in found if pair is not None])
        grid = np.arange(drawn.min() - 1, drawn.max() + 1)
        exact = stats.binom.sf(r - 1, N, (grid + 1) / N)
        empirical = np.searchsorted(np.sort(drawn), grid, side="right") / draws
        # The Kolmogorov-Smirnov bound at the 0.1% level for 20,000 draws (conservative for a
        # discrete law); shifting the order statistic by 3 ranks moves the CDF by ~0.03.
        assert np.abs(empirical - exact).max() < 1.95 / math.sqrt(draws), (q, side)


def _counted(band: Band, rng: np.random.Generator, rows: int) -> list[np.ndarray] | None:
    """Band.draw by counting every band draw: its cumulative counts per resample, in each
    side's rank order, until they reach the rank wanted (the reference)."""
    size = band.cases.shape[0]
    counts = rng.multinomial(band.n, band.shares, size=rows)
    drawn = rng.integers(0, size, size=int(counts[:, 0].sum()))
    found = []
    for side, labels in enumerate((drawn, band.base_positions[drawn])):
        below = counts[:, 1] + (counts[:, 2] if side == 0 else counts[:, 3])
        needed, cases = band.r - below, []
        for row, start in enumerate(np.cumsum(counts[:, 0]) - counts[:, 0]):
            running = np.cumsum(np.bincount(labels[start : start + counts[row, 0]], None, size))
            at = int(np.searchsorted(running, needed[row]))
            if needed[row] < 1 or at >= size:
                return None
            cases.append(band.orders[side][at])
        rank = band.ranks[side][np.array(cases)]
        if not ((rank >= band.lo) & (rank < band.hi)).all():
            return None
        found.append(np.array(cases))
    return found


@pytest.mark.parametrize("ties", [False, True])
def test_each_resamples_quantile_case_is_the_one_counting_its_draws_finds(ties, monkeypatch):
    base, cand = _latencies(np.random.default_rng(60 + ties), ties)
    ranks = (stable_ranks(cand), stable_ranks(base))
    for q in (0.01, 0.5, 0.95):
        band = Band(ranks, order_statistic(N, q))
        for seed in range(5):
            found = band.draw(np.random.default_rng(seed), 100)
            reference = _counted(band, np.random.default_rng(seed), 100)
            assert found is not None and reference is not None
            assert all(np.array_equal(a, b) for a, b in zip(found, reference, strict=True))
    # A band too narrow for its resamples, one resample at a time: its quantile falls below
    # the band or above it, or (rarely) in it; both give up, or agree.
    monkeypatch.setattr(banded_quantiles, "BAND_SDS", 0.0)
    band = Band(ranks, order_statistic(N, 0.5))
    outcomes = []
    for seed in range(60):
        found = band.draw(np.random.default_rng(seed), 1)
        reference = _counted(band, np.random.default_rng(seed), 1)
        assert (found is None) == (reference is None), seed
        outcomes.append(found is None)
        if found is not None and reference is not None:
            assert all(np.array_equal(a, b) for a, b in zip(found, reference, strict=True))
    assert any(outcomes)


def test_a_resample_leaving_the_band_falls_back_to_the_plain_bootstrap(monkeypatch):
    rng = np.random.default_rng(30)
    base, cand = _latencies(rng, ties=False)
    monkeypatch.setattr(banded_quantiles, "BAND_SDS", 0.0)  # a band of 33 ranks: always left
    assert banded_quantile_deltas(base, cand, (0.5,), 4, 200) is None
    got = PairedBootstrap(N, seed=4, resamples=200).quantile_delta_intervals(base, cand, (0.5,))
    plain = _plain_quantile_deltas(base, cand, 0.5, np.random.default_rng(4), 200)
    np.testing.assert_allclose(got[0], np.quantile(plain, TAILS), rtol=0, atol=1e-12)


def test_below_the_threshold_the_bootstrap_is_kept():
    """Five events in LARGE_N - 1 cases: the bootstrap's BCa interval (scipy's, on the same
    values) is [2, 11] events, where the normal shortcut would give [0.6, 9.4]."""
    size = LARGE_N - 1
    values = np.zeros(size)
    values[:5] = 1.0
    got = PairedBootstrap(size, seed=6).mean_intervals(values)[0] * size
    reference = stats.bootstrap(
        (values,), np.mean, method="BCa", n_resamples=RESAMPLES, random_state=7
    ).confidence_interval
    np.testing.assert_allclose(got, np.array([reference.low, reference.high]) * size, atol=1.0)
    assert got[0] >= 1.5 and got[1] >= 10.5  # not the normal interval's 0.6 and 9.4
