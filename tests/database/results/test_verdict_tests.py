"""Which test a paired comparison gets (verdicts.paired_test), and that the verdict and its
reason follow the mean change the interval shows: for pass shares of repetitions the sign-flip
test of the mean, which a sign test of counts of cases is not."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from database.results import verdicts
from database.results.verdicts import TEST_NAMES, Pending, paired_test
from utils.statistics import PairedBootstrap


def _verdict(
    baseline: np.ndarray,
    candidate: np.ndarray,
    seed: int = 7,
    ci: tuple[float, float] | None = None,
):
    """The comparison's verdict, with its bootstrap interval unless `ci` is given (an interval
    inside the margin, as a percentile bootstrap of a few flips gave, to show the exact bound
    holds whatever the interval)."""
    test, p = paired_test(baseline, candidate, graded=False, seed=seed)
    pending = Pending("pass rate", "primary", False, baseline, candidate, 0, test, p)
    if ci is None:
        deltas = candidate - baseline
        low, high = PairedBootstrap(len(baseline), seed=seed).mean_intervals(deltas)[0]
        ci = (float(low), float(high))
    return verdicts.tested(pending, ci, p, min_effect=0.02)


NARROW = (-0.015, 0.0)  # a percentile bootstrap's interval of one flip in 200 cases


def test_shares_that_regressed_in_the_mean_are_regressed_by_the_test_of_the_mean():
    # Ten repetitions a case: 40 cases one repetition better, 12 cases broken, 148 the same.
    # Counted as cases, 40 up against 12 down (a sign test's p < 0.001); the mean fell.
    baseline = np.concatenate([np.full(40, 0.5), np.full(12, 1.0), np.full(148, 0.7)])
    candidate = np.concatenate([np.full(40, 0.6), np.full(12, 0.0), np.full(148, 0.7)])
    found = _verdict(baseline, candidate)
    assert found.delta is not None and found.delta < 0
    assert found.ci is not None and found.ci[1] < 0
    assert found.test == "sign-flip"
    assert found.p_value is not None and 0.005 < found.p_value < 0.05
    assert found.verdict == "regressed"
    assert f"{TEST_NAMES['sign-flip']} p = 0.0" in found.reason, found.reason
    assert found.reason.endswith(": regressed")


def test_shares_balanced_in_the_mean_are_not_called_whatever_the_counts():
    # 40 cases a third better, 12 broken: 40/3 outweighs 12, the mean barely moved.
    baseline = np.concatenate([np.full(40, 1 / 3), np.full(12, 1.0), np.full(148, 2 / 3)])
    candidate = np.concatenate([np.full(40, 2 / 3), np.full(12, 0.0), np.full(148, 2 / 3)])
    found = _verdict(baseline, candidate)
    assert found.p_value is not None and found.p_value > 0.5
    assert found.verdict == "inconclusive"


def test_pass_fail_cases_keep_mcnemars_exact_test():
    rng = np.random.default_rng(3)
    baseline = (rng.random(300) < 0.8).astype(float)
    candidate = np.where(rng.random(300) < 0.1, 1.0 - baseline, baseline)
    test, p = paired_test(baseline, candidate, graded=False, seed=1)
    b = int(((baseline == 1) & (candidate == 0)).sum())
    c = int(((baseline == 0) & (candidate == 1)).sum())
    assert test == "mcnemar-exact"
    assert p == pytest.approx(mcnemar([[0, b], [c, 0]], exact=True).pvalue, abs=1e-12)
    assert paired_test(baseline[:0], candidate[:0], graded=False, seed=1)[0] == "sign-flip"
    assert all(name in TEST_NAMES for name in ("mcnemar-exact", "sign-flip"))


def test_no_change_with_a_margin_of_0_says_equivalence_cannot_be_shown():
    same = np.full(300, 1.0)
    test, p = paired_test(same, same, graded=False, seed=1)
    pending = Pending("pass rate", "primary", False, same, same, 0, test, p)
    found = verdicts.tested(pending, (0.0, 0.0), p, min_effect=0.0)
    assert found.verdict == "inconclusive"
    assert "margin of 0" in found.reason and "inf" not in found.reason, found.reason


def _flips(cases: int, regressed: int, improved: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pass/fail cases: `regressed` passed then failed, `improved` the other way, the rest
    passed both times."""
    baseline = np.ones(cases)
    candidate = np.ones(cases)
    candidate[:regressed] = 0.0
    baseline[regressed : regressed + improved] = 0.0
    return baseline, candidate


@pytest.mark.parametrize(("cases", "regressed"), [(200, 1), (250, 2), (300, 3)])
def test_a_few_flips_inside_the_margin_do_not_show_equivalence(cases: int, regressed: int):
    """The percentile bootstrap of one flip in 200 cases was [-1.5, 0] points; the exact bound
    of the share that regressed is 2.75%, past a margin of 2. The BCa interval reaches past
    the margin itself; the bound holds given the narrow one too."""
    assert _verdict(*_flips(cases, regressed)).verdict == "inconclusive"
    found = _verdict(*_flips(cases, regressed), ci=NARROW)
    assert found.verdict == "inconclusive", found.reason
    assert f"with {regressed} of {cases} cases regressed, up to" in found.reason
    assert found.reason.endswith("no equivalence shown)")


@pytest.mark.parametrize(("cases", "flips"), [(200, 1), (250, 2)])
def test_flips_only_for_the_better_are_no_worse_those_for_the_worse_are_not(cases: int, flips: int):
    """What a gate failing on regression asks: a few cases fixed leave the comparison
    inconclusive but shown no worse; as many broken do not (their exact bound is past the
    margin, however narrow the interval)."""
    fixed = _verdict(*_flips(cases, 0, improved=flips))
    broken = _verdict(*_flips(cases, flips), ci=NARROW)  # the interval alone would pass it
    assert fixed.verdict == broken.verdict == "inconclusive"
    assert fixed.not_worse is True, fixed.reason
    assert broken.not_worse is False, broken.reason


@pytest.mark.parametrize(("cases", "regressed"), [(183, 0), (400, 2), (2000, 20)])
def test_flips_whose_exact_bound_is_inside_the_margin_still_show_equivalence(
    cases: int, regressed: int
):
    found = _verdict(*_flips(cases, regressed, improved=regressed))
    assert found.verdict == "equivalent", found.reason


def test_a_regression_past_the_margin_is_called_equivalent_at_most_at_the_nominal_rate():
    """2.5 points of cases regress (outside the margin of 2); each trial draws 250 cases. An
    'equivalent' is the error the margin bounds, at most 2.5% of trials (one side of 95%);
    before the exact bound, a bootstrap of so few flips said it in 3-4%."""
    rng = np.random.default_rng(11)
    trials, equivalent = 2000, 0
    for trial in range(trials):
        regressed = int(rng.binomial(250, 0.025))
        baseline, candidate = _flips(250, regressed)
        equivalent += _verdict(baseline, candidate, seed=trial).verdict == "equivalent"
    assert equivalent / trials <= 0.025, f"{equivalent / trials:.1%} called equivalent"


@pytest.mark.parametrize("cases", [183, 250])
def test_a_regression_of_cases_moved_part_way_is_called_equivalent_at_most_at_the_nominal_rate(
    cases: int,
):
    """At the margin, made of cases each losing two repetitions of three (no case flips whole,
    so no exact bound applies): the percentile interval called it equivalent in 9% of trials
    at 183 cases and 5% at 250, where one side of a 95% interval promises 2.5%."""
    rng = np.random.default_rng(13)
    trials, equivalent = 1000, 0
    for trial in range(trials):
        baseline, candidate = np.ones(cases), np.ones(cases)
        candidate[: rng.binomial(cases, 0.03)] = 1 / 3  # 3% of cases, 2/3 each: -2 points
        equivalent += _verdict(baseline, candidate, seed=trial).verdict == "equivalent"
    assert equivalent / trials <= 0.025, f"{equivalent / trials:.1%} called equivalent"


def test_a_flaky_case_that_did_not_move_leaves_the_flips_bounded():
    """Three repetitions a case: one case broken (3/3 to 0/3) beside one flaky case at 2/3 on
    both sides. The shares make the test the sign-flip test; the one broken case still bounds
    what could have regressed at 2.75%, past the margin, as it does without the flaky case."""
    baseline, candidate = _flips(200, 1)
    baseline[199] = candidate[199] = 2 / 3
    found = _verdict(baseline, candidate, ci=NARROW)
    assert found.test == "sign-flip"
    assert found.verdict == "inconclusive", found.reason
    assert "with 1 of 200 cases regressed in every repetition, up to 2.8%" in found.reason


def test_a_case_flipped_in_every_repetition_is_bounded_one_moved_part_way_is_not():
    # Two cases failing every repetition of three, where they passed every one: 2.85% of 250.
    baseline, candidate = np.ones(250), np.ones(250)
    candidate[:2] = 0.0
    baseline[2:50] = candidate[2:50] = 2 / 3  # flaky, unchanged
    found = _verdict(baseline, candidate, ci=NARROW)
    assert found.verdict == "inconclusive", found.reason
    assert "with 2 of 250 cases regressed in every repetition, up to 2.9%" in found.reason
    # Six cases a repetition down of three, in 2,000: chance's variation, which the interval
    # sees; no case flipped whole.
    baseline, candidate = np.ones(2000), np.ones(2000)
    candidate[:6] = 2 / 3
    assert _verdict(baseline, candidate).verdict == "equivalent"


def test_stochastic_cases_that_did_not_change_show_equivalence():
    """With repetitions, cases of a model that answers by chance move both ways by chance:
    counted as flips, that alone put every such comparison past the margin (0 in 100 trials
    equivalent, where the interval says so in 94)."""
    rng = np.random.default_rng(21)
    trials, equivalent = 60, 0
    for trial in range(trials):
        chances = rng.choice([0.98, 0.5, 0.03], size=1000, p=[0.8, 0.1, 0.1])
        baseline = rng.binomial(3, chances) / 3
        candidate = rng.binomial(3, chances) / 3
        equivalent += _verdict(baseline, candidate, seed=trial).verdict == "equivalent"
    assert equivalent / trials >= 0.85, f"{equivalent} of {trials} equivalent"


def test_shares_past_the_margin_are_called_equivalent_at_most_at_the_nominal_rate():
    """As the simulation above, with three repetitions a case and one flaky case unchanged
    at 2/3: before the bound held for shares, 3-4% of trials said 'equivalent'."""
    rng = np.random.default_rng(12)
    trials, equivalent = 1000, 0
    for trial in range(trials):
        baseline, candidate = _flips(250, int(rng.binomial(250, 0.025)))
        baseline[249] = candidate[249] = 2 / 3
        equivalent += _verdict(baseline, candidate, seed=trial).verdict == "equivalent"
    assert equivalent / trials <= 0.025, f"{equivalent / trials:.1%} called equivalent"


def _graded_verdict(baseline: np.ndarray, candidate: np.ndarray, lower_is_better: bool = False):
    test, p = paired_test(baseline, candidate, graded=True, seed=7)
    pending = Pending("score", "primary", True, baseline, candidate, 0, test, p, lower_is_better)
    low, high = PairedBootstrap(len(baseline), seed=7).mean_intervals(candidate - baseline)[0]
    return verdicts.tested(pending, (float(low), float(high)), p, min_effect=0.02)


@pytest.mark.parametrize("lower_is_better", [False, True])
def test_a_score_whose_ranks_fell_while_its_mean_rose_gets_no_verdict(lower_is_better: bool):
    # 80 cases a little lower, 20 much higher: the mean rose (CI above 0), while the
    # signed-rank test is significant for the fall (one-sided p 0.004 down, 0.996 up).
    baseline = np.full(100, 0.5)
    candidate = np.concatenate([np.full(80, 0.45), np.full(20, 1.0)])
    found = _graded_verdict(baseline, candidate, lower_is_better)
    assert found.ci is not None and found.ci[0] > 0
    assert found.p_value is not None and found.p_value < 0.05
    assert found.verdict == "inconclusive", found.reason
    assert "the mean went up, but by rank the cases went down: 80 of 100" in found.reason


def test_a_score_whose_ranks_and_mean_agree_keeps_its_verdict():
    rng = np.random.default_rng(5)
    baseline = rng.random(100)
    candidate = baseline + rng.normal(0.08, 0.05, 100)
    assert _graded_verdict(baseline, candidate).verdict == "improved"
    assert _graded_verdict(baseline, candidate, lower_is_better=True).verdict == "regressed"
