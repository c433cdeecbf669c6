"""The signed-rank test of a few tied changes (graded scores move in steps): exact, against
scipy's permutation method and a plain enumeration of every sign, without scipy's loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from utils.sign_flips import SIGN_FLIP_EXACT
from utils.statistics import signed_rank_test

STEPS = np.array([0.25, 0.5, 0.75, 1.0, -0.25, -0.5, -0.75, -1.0])


def _enumerated_p(changes: np.ndarray) -> float:
    """Every sign of the changes' average ranks, equally likely: the share of sign patterns
    whose sum of positive ranks is as far from its centre as the one seen, by counting the
    patterns of each sum (in half ranks, whole numbers), one rank at a time."""
    halves = np.rint(2 * stats.rankdata(np.abs(changes))).astype(int)
    patterns = np.zeros(halves.sum() + 1)
    patterns[0] = 1.0
    for half in halves:
        patterns[half:] = patterns[half:] + patterns[:-half].copy()
    sums = np.arange(patterns.size)
    observed = abs(2 * halves[changes > 0].sum() - halves.sum())
    return float(patterns[np.abs(2 * sums - halves.sum()) >= observed].sum() / 2.0**changes.size)


def _tied(rng: np.random.Generator, size: int) -> np.ndarray:
    changes = rng.choice(STEPS[rng.permutation(8)[: rng.integers(2, 5)]], size)
    return np.concatenate([changes, np.zeros(rng.integers(0, 50))])  # cases that did not move


def test_tied_changes_get_scipys_permutation_p():
    rng = np.random.default_rng(20)
    for _ in range(60):
        differences = _tied(rng, int(rng.integers(2, 9)))
        changes = differences[differences != 0]
        expected = stats.wilcoxon(
            changes, method=stats.PermutationMethod(n_resamples=np.inf)
        ).pvalue
        assert signed_rank_test(differences) == pytest.approx(expected, abs=1e-12), changes


@pytest.mark.parametrize("size", range(2, SIGN_FLIP_EXACT + 1))
def test_up_to_the_exact_limit_tied_changes_get_the_enumerated_p(size):
    # From 14 tied changes scipy would take the normal law: 0.0037 for 0.0027 at 14.
    rng = np.random.default_rng(size)
    for _ in range(10):
        differences = _tied(rng, size)
        expected = _enumerated_p(differences[differences != 0])
        assert signed_rank_test(differences) == pytest.approx(expected, abs=1e-12)


def test_balanced_ties_are_no_evidence():
    assert signed_rank_test([0.5, -0.5, 0.25, -0.25, 0.0]) == 1.0


def test_few_tied_changes_are_counted_without_scipys_permutation_loop(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("scipy's wilcoxon was called")

    monkeypatch.setattr(stats, "wilcoxon", refused)
    monkeypatch.setattr(stats, "permutation_test", refused)
    differences = np.zeros(300)
    differences[:13] = np.tile([0.25, 0.5, -0.25, 0.75], 4)[:13]
    assert signed_rank_test(differences) == pytest.approx(
        _enumerated_p(differences[:13]), abs=1e-12
    )
