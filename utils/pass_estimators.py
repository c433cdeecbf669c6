"""Estimators from repeated attempts of one case: pass@k (any of k attempts passes) and pass^k
(all of k pass), unbiased from n attempts of which c passed."""

from __future__ import annotations

import numpy as np


def _check_counts(n: int, c: int, k: int) -> None:
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k (Chen et al. 2021) from n attempts of which c passed:
    1 - C(n-c, k) / C(n, k), for 1 <= k <= n. Computed as 1 - prod_{j=n-c+1..n} (1 - k/j)
    in log space; exactly 1.0 when n - c < k."""
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    # (+ 0.0: with c = 0 the sum is 0, whose negation is -0.0, shown as such in JSON)
    return float(-np.expm1(np.log1p(-k / np.arange(n - c + 1, n + 1)).sum())) + 0.0


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass^k (all k of k attempts pass) from n attempts of which c
    passed: C(c, k) / C(n, k) = prod_{i<k} (c - i) / (n - i); 0.0 when c < k."""
    _check_counts(n, c, k)
    if c < k:
        return 0.0
    i = np.arange(k)
    return float(np.prod((c - i) / (n - i)))
