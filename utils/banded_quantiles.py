"""The quantile deltas of a large paired bootstrap, drawn without n draws per resample
(utils/statistics.py uses them from LARGE_N cases).

A resample's q-quantile only depends on how many draws fall below a band of ranks around it
and on the draws of the few thousand cases inside the band (see Band): the deltas are drawn
exactly in the plain bootstrap's law, each resample costing draws in proportion to the band
(about the square root of n cases), not to n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# The band of ranks around a quantile, in standard deviations of the number of draws below
# it (binomial): a resample leaves it with probability ~1e-9 (once in ~60,000 compares of
# two quantiles); then the plain bootstrap is used for the whole interval.
BAND_SDS = 6.0

# Resamples are drawn this many at a time. The draws, hence the intervals, depend on it: a
# change changes every large comparison's latency intervals.
BLOCK = 100


def order_statistic(n: int, q: float) -> int:
    """The 1-based rank of the 'inverted_cdf' q-quantile among n values.

    Written with the same floating-point expression as numpy's method="inverted_cdf"
    (0-based index ceil(n*q - 1), clipped to [0, n - 1]) so the two agree at every q.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    return min(max(math.ceil(n * q - 1), 0), n - 1) + 1


def stable_ranks(values: FloatArray) -> npt.NDArray[np.int64]:
    """Each value's 0-based rank in stable sorted order (ties in index order)."""
    ranks = np.empty(values.shape[0], dtype=np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.shape[0])
    return ranks


class Band:
    """The cases whose rank on either side (candidate, baseline) lies within a band around the
    r-th smallest, for drawing that order statistic of paired resamples without n draws each.

    Every other case is below or above the band on each side, so for the r-th smallest only
    how many draws fall in each of those four cells matters. The counts (band, four cells) are
    multinomial over n draws and, given the band's total, each draw in the band is uniform over
    its cases: the same joint law as counting n uniform indices. The r-th smallest on a side is
    then the band draw of rank r minus the draws below the band, in that side's rank order; it
    is only trusted when that case lies in the band (below it, the counts are not the true
    ones)."""

    def __init__(self, ranks: tuple[npt.NDArray[np.int64], ...], r: int) -> None:
        n = ranks[0].shape[0]
        share = r / n
        margin = math.ceil(BAND_SDS * math.sqrt(n * share * (1.0 - share))) + 16
        self.r, self.ranks, self.n = r, ranks, n
        self.lo, self.hi = max(r - 1 - margin, 0), min(r + margin, n)
        inside = np.zeros(n, dtype=bool)
        for rank in ranks:
            inside |= (rank >= self.lo) & (rank < self.hi)
        cases = np.flatnonzero(inside)
        # Band cases are labelled in candidate rank order; base_positions relabels them in
        # baseline rank order.
        self.cases = cases[np.argsort(ranks[0][cases])]
        by_base = np.argsort(ranks[1][self.cases])
        self.base_positions = np.empty_like(by_base)
        self.base_positions[by_base] = np.arange(by_base.shape[0])
        self.orders = (self.cases, self.cases[by_base])
        below_c, below_b = ((rank < self.lo) & ~inside for rank in ranks)
        above_c, above_b = ((rank >= self.hi) & ~inside for rank in ranks)
        cells = (below_c & below_b, below_c & above_b, above_c & below_b, above_c & above_b)
        sizes = [self.cases.shape[0]] + [int(cell.sum()) for cell in cells]
        self.shares = np.array(sizes, dtype=np.float64) / n

    def draw(self, rng: np.random.Generator, rows: int) -> list[npt.NDArray[np.int64]] | None:
        """For `rows` resamples, the case that is the r-th smallest on each side (candidate,
        baseline), or None when one of them lies outside the band."""
        size = self.cases.shape[0]
        counts = rng.multinomial(self.n, self.shares, size=rows)
        in_band = counts[:, 0]
        drawn = rng.integers(0, size, size=int(in_band.sum()))  # labels, candidate rank order
        ends = np.cumsum(in_band).tolist()
        starts = [0, *ends[:-1]]
        found = []
        sides = (
            (drawn, counts[:, 1] + counts[:, 2]),
            (self.base_positions[drawn], counts[:, 1] + counts[:, 3]),
        )
        for side, (labels, below) in enumerate(sides):
            # The r-th smallest is the band draw of rank r - below, when the band holds it:
            # one selection per resample, among its own draws (a few thousand, in cache).
            needed = self.r - below
            if not ((needed >= 1) & (needed <= in_band)).all():
                return None
            at = np.empty(rows, dtype=np.int64)
            wanted = zip(starts, ends, needed.tolist(), strict=True)
            for row, (start, end, rank_in_band) in enumerate(wanted):
                at[row] = np.partition(labels[start:end], rank_in_band - 1)[rank_in_band - 1]
            case = self.orders[side][at]
            rank_of_case = self.ranks[side][case]
            if not ((rank_of_case >= self.lo) & (rank_of_case < self.hi)).all():
                return None
            found.append(case)
        return found


def banded_quantile_deltas(
    base: FloatArray, cand: FloatArray, quantiles: Sequence[float], seed: int, resamples: int
) -> FloatArray | None:
    """quantile(cand) - quantile(base) over `resamples` paired bootstrap resamples, shape
    (resamples, len(quantiles)), drawn with the law of the plain bootstrap (see Band), or None
    when a resample's quantile left its band (the caller then draws the plain way)."""
    rng = np.random.default_rng(seed)
    ranks = (stable_ranks(cand), stable_ranks(base))
    deltas = np.empty((resamples, len(quantiles)))
    for j, q in enumerate(quantiles):
        band = Band(ranks, order_statistic(base.shape[0], q))
        for start in range(0, resamples, BLOCK):
            rows = min(BLOCK, resamples - start)
            found = band.draw(rng, rows)
            if found is None:
                return None
            deltas[start : start + rows, j] = cand[found[0]] - base[found[1]]
    return deltas
