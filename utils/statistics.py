"""Statistics for comparing two runs of the same test cases (a baseline and a candidate).

The design is paired: case i of the baseline and case i of the candidate are the same input,
so intervals come from resampling cases (not attempts) and tests work on per-case differences.
Pure numpy/scipy: nothing here knows the web layer or the database.

Large comparisons (n >= LARGE_N cases) take two shortcuts that keep the bootstrap's answer:
- the interval of a mean is the normal one, mean +- z * sd / sqrt(n) with the sd of the values
  themselves (ddof=0: the bootstrap distribution's own variance is s^2 (n - 1) / n^2), clipped
  to [min, max] of the values as a bootstrap mean is. The bootstrap law of a mean is then
  normal but for a skewness term (Cornish-Fisher) moving its 2.5%/97.5% points by
  |skew| (z^2 - 1) / (6 sqrt(n)) of its sd; that stays within one Monte Carlo standard error of
  2,000 resamples (0.06 sd) while |skew| < 0.126 sqrt(n): for a share, at least ~63 events,
  whatever n. With fewer, the whole interval is under 3.92 sqrt(63) / n wide (0.006 at
  5,000 cases, a third of the default margin), so no verdict turns on the difference;
- the interval of a quantile delta is still the paired percentile bootstrap with RESAMPLES
  resamples, drawn exactly in distribution but without drawing n indices per resample: a
  resample's q-quantile only depends on how many draws fall below a band of ranks around it
  and on the draws of the few thousand cases inside the band (utils/banded_quantiles.py).
Below LARGE_N every interval is the plain bootstrap's (BCa for means: utils/bca.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from utils.banded_quantiles import BLOCK, FloatArray, banded_quantile_deltas, order_statistic
from utils.bca import bca_mean_intervals
from utils.sign_flips import SIGN_FLIP_EXACT, exact_sign_flips

RESAMPLES = 2000
CONFIDENCE = 0.95
# From here the shortcuts above apply. The plain bootstrap costs ~40 ms of CPU per 1,000 cases
# for a compare's five means and two latency quantiles (0.2 s at 5,000; 5 s at 100,000, plus
# each slice of the cases); above 3,000 cases (the largest compare the tests check against a
# plain numpy bootstrap) its own Monte Carlo error is what separates it from the normal
# interval (see above).
LARGE_N = 5_000
INTERVALS = (
    "Intervals of a paired bootstrap over cases: BCa for means (as scipy.stats.bootstrap),"
    f" percentile for quantile deltas; from {LARGE_N:,} cases, the interval of a mean (each"
    " slice's too) is the normal one with the bootstrap's own variance (clipped to the values'"
    " range), and a quantile's bootstrap draws only the cases near that quantile."
)
# Resamples are drawn BLOCK at a time (the banded bootstrap's block too), fewer when n is
# large, so that one block holds at most about _BLOCK_ELEMENTS case indices (a few tens of MB)
# whatever the number of resamples.
_BLOCK_ELEMENTS = 4_000_000

Verdict = Literal["improved", "regressed", "equivalent", "inconclusive"]


def _resample_quantiles(
    indices: npt.NDArray[np.int64], values: FloatArray, quantiles: Sequence[float]
) -> FloatArray:
    """The 'inverted_cdf' quantiles of each resample values[indices[r]]: shape (rows, len(q)).

    A resample's q-quantile is its r-th smallest value, r = order_statistic(n, q), so each row
    is mapped to the ranks of its values in sorted order and one partition per q finds the r-th
    smallest rank (the same as the first sorted value whose cumulative count reaches r).
    """
    n = values.shape[0]
    order = np.argsort(values, kind="stable")
    rank_of = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    rank_of[order] = np.arange(n)
    ranks = rank_of[indices]
    result = np.empty((indices.shape[0], len(quantiles)))
    for j, q in enumerate(quantiles):
        kth = order_statistic(n, q) - 1
        ranks.partition(kth, axis=1)
        result[:, j] = values[order[ranks[:, kth]]]
    return result


class PairedBootstrap:
    """Paired bootstrap over cases: resamples case indices with replacement (seeded), the same
    resamples for every statistic asked of one instance (so statistics are resampled jointly).

    The resamples depend only on (seed, n, resamples): they are drawn again, identically, for
    each call, in blocks, so memory stays bounded for any number of resamples. A mean's interval
    is BCa; a quantile delta's the percentile one (numpy's linear quantiles of the resamples).
    """

    def __init__(
        self, n: int, *, seed: int, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
    ) -> None:
        if n < 0 or resamples < 1 or not 0.0 < confidence < 1.0:
            raise ValueError("need n >= 0, resamples >= 1 and 0 < confidence < 1")
        self.n = n
        self.seed = seed
        self.resamples = resamples
        self.confidence = confidence

    def _indices(self) -> Iterator[npt.NDArray[np.int64]]:
        """Yield blocks of resamples, shape (block, n): the case indices drawn, row by row."""
        rng = np.random.default_rng(self.seed)
        block = max(1, min(BLOCK, _BLOCK_ELEMENTS // max(self.n, 1)))
        for start in range(0, self.resamples, block):
            yield rng.integers(0, self.n, size=(min(block, self.resamples - start), self.n))

    def _counts(self) -> Iterator[npt.NDArray[np.intp]]:
        """Yield blocks of resamples, shape (block, n): how often each case is drawn."""
        n = self.n
        for indices in self._indices():
            rows = indices.shape[0]
            indices += np.arange(rows)[:, None] * n
            yield np.bincount(indices.ravel(), minlength=rows * n).reshape(rows, n)

    def _interval(self, statistic: FloatArray) -> FloatArray:
        """Percentile interval along axis 0 of a (resamples, k) statistic: shape (k, 2)."""
        tail = (1.0 - self.confidence) / 2.0
        return np.quantile(statistic, [tail, 1.0 - tail], axis=0).T

    def _column(self, values: npt.ArrayLike) -> FloatArray:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.shape[0] != self.n:
            raise ValueError(f"expected shape ({self.n},), got {array.shape}")
        if np.isnan(array).any():
            raise ValueError("values contain NaN")
        return array

    def mean_intervals(self, values: npt.ArrayLike) -> FloatArray:
        """values: shape (n,) or (n, m), no NaN. Returns shape (m, 2): the BCa interval (low,
        high) of each column's mean over the resamples (utils/bca.py; NaN when n = 0)."""
        array = np.asarray(values, dtype=np.float64)
        matrix = array[:, None] if array.ndim == 1 else array
        if matrix.ndim != 2 or matrix.shape[0] != self.n:
            raise ValueError(f"expected shape ({self.n},) or ({self.n}, m), got {array.shape}")
        if np.isnan(matrix).any():
            raise ValueError("values contain NaN")
        if self.n == 0:
            return np.full((matrix.shape[1], 2), np.nan)
        if self.n >= LARGE_N:
            return normal_mean_intervals(matrix, self.confidence)
        # (as floats: numpy multiplies integer matrices without BLAS, ten times slower)
        means = np.concatenate(
            [counts.astype(np.float64) @ matrix / self.n for counts in self._counts()]
        )
        return bca_mean_intervals(matrix, means, self.confidence)

    def quantile_delta_intervals(
        self, baseline: npt.ArrayLike, candidate: npt.ArrayLike, quantiles: Sequence[float]
    ) -> FloatArray:
        """baseline, candidate: shape (n,), paired by index. For each q, the percentile interval
        of quantile(candidate) - quantile(baseline) over the resamples (both sides resampled
        with the same case indices). Returns shape (len(quantiles), 2), NaN when n = 0.
        Quantiles use the 'inverted_cdf' definition (the smallest value whose cumulative share
        is >= q), the same as quantile(values, q) below."""
        base, cand = self._column(baseline), self._column(candidate)
        if self.n == 0:
            return np.full((len(quantiles), 2), np.nan)
        if self.n >= LARGE_N:
            banded = banded_quantile_deltas(base, cand, quantiles, self.seed, self.resamples)
            if banded is not None:
                return self._interval(banded)
        deltas = [
            _resample_quantiles(indices, cand, quantiles)
            - _resample_quantiles(indices, base, quantiles)
            for indices in self._indices()
        ]
        return self._interval(np.concatenate(deltas))


def normal_mean_intervals(matrix: FloatArray, confidence: float = CONFIDENCE) -> FloatArray:
    """The normal interval of each column's mean, (m, 2), with the bootstrap's own variance
    (the values' variance with ddof=0, over n), clipped to the range a resampled mean can take."""
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    means = matrix.mean(axis=0)
    half = z * matrix.std(axis=0) / math.sqrt(matrix.shape[0])
    low = np.maximum(means - half, matrix.min(axis=0))
    high = np.minimum(means + half, matrix.max(axis=0))
    return np.column_stack([low, high])


def quantile(values: npt.ArrayLike, q: float) -> float:
    """The q-quantile by the 'inverted_cdf' definition (the smallest value whose cumulative
    share is >= q); NaN for no values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan
    return float(np.quantile(array, q, method="inverted_cdf"))


def sign_test(improved: int, regressed: int) -> float:
    """Two-sided exact binomial test on the discordant pairs (p = 0.5): McNemar's exact test when
    each case is pass/fail. 1.0 when there are no discordant pairs.

    The law at p = 0.5 is symmetric, so the counts no likelier than the one seen are those as
    far from either end as the smaller count or farther: twice its lower tail (what
    scipy.stats.binomtest sums, in microseconds rather than two milliseconds)."""
    if improved < 0 or regressed < 0:
        raise ValueError("counts must be >= 0")
    n, fewer = improved + regressed, min(improved, regressed)
    if 2 * fewer == n:
        return 1.0
    from scipy.special import bdtr  # (on first use: the process starts without scipy)

    return min(1.0, 2.0 * float(bdtr(fewer, n, 0.5)))


def signed_rank_test(differences: npt.ArrayLike) -> float:
    """Wilcoxon signed-rank test (two-sided) of the nonzero differences; 1.0 when every
    difference is zero or there are none.
    The zeros are dropped first: scipy picks its method by the length of what it is given, so
    5 changed cases among 100 would get the normal approximation (p 0.025) rather than the
    exact distribution of five signs (p 0.0625). Up to SIGN_FLIP_EXACT changes, p is exact,
    ties or not: the share of the sign patterns of the (average) ranks whose statistic is as
    far from its centre (what scipy.stats.wilcoxon's permutation method counts one pattern at a
    time, seconds for a dozen tied changes). Above, scipy.stats.wilcoxon's own choice."""
    array = np.asarray(differences, dtype=np.float64)
    array = array[array != 0]
    if array.size == 0:
        return 1.0
    from scipy import stats

    if array.size <= SIGN_FLIP_EXACT:
        return _exact_signed_rank_test(stats.rankdata(np.abs(array)) * np.sign(array))
    return float(stats.wilcoxon(array, alternative="two-sided").pvalue)


def _exact_signed_rank_test(signed_ranks: FloatArray) -> float:
    """The exact two-sided p of the signed ranks' sum under fair signs. Average ranks are
    multiples of 1/2, and so is every sum: a sum within 1/4 of the observed size is that size."""
    observed = abs(float(signed_ranks.sum()))
    if observed < 0.25:
        return 1.0
    return exact_sign_flips(signed_ranks, observed - 0.25)


def signed_rank_balance(differences: npt.ArrayLike) -> float:
    """The signed-rank statistic's side: the ranks of the rises (by size, zeros dropped, ties
    averaged) less those of the falls. The side the signed-rank test finds significant, which
    need not be the mean's: 80 cases a little lower and 20 much higher raise the mean."""
    array = np.asarray(differences, dtype=np.float64)
    array = array[array != 0]
    if array.size == 0:
        return 0.0
    from scipy import stats

    return float((stats.rankdata(np.abs(array)) * np.sign(array)).sum())


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order:
    the i-th smallest of m p-values becomes max over j <= i of (m - j + 1) * p_(j).
    NaN entries are not tests: they stay NaN and do not count in the family size."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    factors = np.arange(len(order), 0, -1)
    adjusted[order] = np.minimum(np.maximum.accumulate(factors * p[order]), 1.0)
    return [float(x) for x in adjusted]


def cases_to_show_equivalence(min_effect: float, confidence: float = CONFIDENCE) -> int:
    """The fewest paired cases with which even "no case changed" bounds a change at
    `min_effect`: the exact binomial bound 1 - ((1 - confidence) / 2) ** (1 / n) on the share
    of cases that could have changed unseen. Below it, a bootstrap interval can be [0, 0]
    (nothing varied) and still prove nothing: 183 cases for a margin of 2 points."""
    if min_effect <= 0:
        return math.inf  # type: ignore[return-value]
    if min_effect >= 1:
        return 1
    tail = (1.0 - confidence) / 2.0
    needed = math.log(tail) / math.log1p(-min_effect)
    if not math.isfinite(needed):  # a margin too small for a float: no number of cases
        return math.inf  # type: ignore[return-value]
    return math.ceil(needed)


def share_upper_bound(count: int, cases: int, confidence: float = CONFIDENCE) -> float:
    """The exact (Clopper-Pearson) upper bound of a share seen `count` times in `cases`: the
    high end of its two-sided `confidence` interval. With no case seen, 1 - tail ** (1 / n),
    the bound cases_to_show_equivalence inverts."""
    if not 0 <= count <= cases or cases < 1:
        raise ValueError(f"need 0 <= count <= cases and cases >= 1, got {count} of {cases}")
    if count == cases:
        return 1.0
    from scipy.special import betaincinv  # (on first use: the process starts without scipy)

    tail = (1.0 - confidence) / 2.0
    return float(betaincinv(count + 1, cases - count, 1.0 - tail))


def verdict(
    low: float,
    high: float,
    p_adjusted: float,
    *,
    min_effect: float,
    cases: int,
    alpha: float = 0.05,
) -> Verdict:
    """From a delta's interval (candidate minus baseline; higher is better), its adjusted p and
    the number of paired cases: 'equivalent' when the whole interval lies inside
    [-min_effect, +min_effect] and there are enough cases to show it (see
    cases_to_show_equivalence), even when significant; else 'improved' when p_adjusted < alpha
    and low > 0;
    'regressed' when p_adjusted < alpha and high < 0; else 'inconclusive'. A NaN p or interval
    is 'inconclusive'."""
    if math.isnan(low) or math.isnan(high) or math.isnan(p_adjusted):
        return "inconclusive"
    # A change smaller than the margin is no change that matters, however significant.
    if -min_effect <= low and high <= min_effect and cases >= cases_to_show_equivalence(min_effect):
        return "equivalent"
    if p_adjusted < alpha and low > 0:
        return "improved"
    if p_adjusted < alpha and high < 0:
        return "regressed"
    return "inconclusive"


def seed_for(*parts: str) -> int:
    """A stable 63-bit seed from strings (e.g. the two run ids): the first 8 bytes of the
    SHA-256 of the length-prefixed parts, shifted to 63 bits. The same on every process and
    platform, unlike hash()."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return int.from_bytes(digest.digest()[:8], "big") >> 1
