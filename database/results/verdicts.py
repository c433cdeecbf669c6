"""One paired comparison's test, verdict and reason in words, e.g. "pass rate 71% → 64%,
-7 points, 95% CI -11 to -3, McNemar p = 0.002 (Holm 0.006): regressed" (with minus signs).

The test is of what the interval shows, the mean change: McNemar's exact test when every case
is pass/fail (there the mean change is the balance of the discordant cases), the sign-flip
test of the mean when cases are shares of repetitions (a sign test, counting a case one
repetition in three better as much as a case broken, can point away from the interval), the
signed-rank test for graded scores, whose verdict stands only where its ranks lean the
mean's way."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from database.results.comparison_schemas import Tested
from utils import statistics as stats
from utils.sign_flips import sign_flip_test

ALPHA = 0.05
MINUS = "\N{MINUS SIGN}"
TEST_NAMES = {
    "mcnemar-exact": "McNemar",
    "sign-flip": "sign-flip test",
    "wilcoxon-signed-rank": "signed-rank",
}


@dataclass
class Pending:
    """A comparison waiting for its interval and its place in the Holm family."""

    label: str
    family: str  # the Holm family it is adjusted in (see comparison.FAMILIES)
    graded: bool  # a score (signed-rank test) rather than pass shares
    baseline: np.ndarray
    candidate: np.ndarray
    slot: int
    test: str
    p_value: float
    lower_is_better: bool = False  # a score whose rule passes below its threshold


def paired_test(
    baseline: np.ndarray, candidate: np.ndarray, graded: bool, *, seed: int
) -> tuple[str, float]:
    """The test's name and its two-sided p-value (NaN with no pair); `seed` for the sign-flip
    test's draws."""
    if len(baseline) == 0:
        return ("wilcoxon-signed-rank" if graded else "sign-flip"), math.nan
    deltas = candidate - baseline
    if graded:
        return "wilcoxon-signed-rank", stats.signed_rank_test(deltas)
    binary = bool(np.all(np.isin(baseline, (0.0, 1.0))) and np.all(np.isin(candidate, (0.0, 1.0))))
    if binary:
        return "mcnemar-exact", stats.sign_test(int((deltas > 0).sum()), int((deltas < 0).sum()))
    return "sign-flip", sign_flip_test(deltas, seed=seed)


def tested(
    pending: Pending, ci: tuple[float, float] | None, p_adjusted: float, min_effect: float
) -> Tested:
    n = len(pending.baseline)
    if n == 0 or ci is None:
        return Tested(
            baseline=None,
            candidate=None,
            delta=None,
            ci=None,
            cases=0,
            test=pending.test,
            p_value=None,
            p_adjusted=None,
            verdict="inconclusive",
            not_worse=False,
            reason=f"{pending.label}: no paired case to compare",
        )
    base, cand = float(pending.baseline.mean()), float(pending.candidate.mean())
    # The verdict is of the change for the better: a score better lower is judged negated.
    better = (-ci[1], -ci[0]) if pending.lower_is_better else ci
    verdict = stats.verdict(*better, p_adjusted, min_effect=min_effect, cases=n, alpha=ALPHA)
    doubt = (
        _unbounded_flips(pending, min_effect)
        if verdict == "equivalent"
        else _ranked_the_other_way(pending, ci)
        if verdict in ("improved", "regressed")
        else ""
    )
    if doubt:
        verdict = "inconclusive"
    not_worse = verdict in ("improved", "equivalent") or (
        verdict == "inconclusive"
        and better[0] >= -min_effect
        and n >= stats.cases_to_show_equivalence(min_effect)
        and not _unbounded_flips(pending, min_effect, ways=("regressed",))
    )
    return Tested(
        baseline=round(base, 6),
        candidate=round(cand, 6),
        delta=round(cand - base, 6),
        ci=(round(ci[0], 6), round(ci[1], 6)),
        cases=n,
        test=pending.test,
        p_value=_finite(pending.p_value),
        p_adjusted=_finite(p_adjusted),
        verdict=verdict,
        not_worse=not_worse,
        reason=_reason(pending, base, cand, ci, p_adjusted, verdict)
        + (doubt or _too_few(verdict, ci, n, min_effect)),
    )


def _unbounded_flips(
    pending: Pending, min_effect: float, ways: tuple[str, ...] = ("regressed", "improved")
) -> str:
    """For pass rates, why an interval inside the margin still does not show equivalence (or,
    of `ways` regressed alone, that the change is no worse): the exact bound of the cases that
    flipped one way is past it. A percentile bootstrap of one or two flips in 200 cases gave
    an interval of a point or so, where the share that could have regressed unseen is up to
    2.75%; the BCa interval reaches about as far, and the exact bound stays the rule for
    whatever interval is given. With repetitions, a flip is a case that went from passing every
    repetition to failing every one (or back): a case that moved part of the way varies as
    chance does, and the bootstrap sees that variation; one flipped whole is the rare event
    it does not."""
    if pending.graded:
        return ""
    deltas = pending.candidate - pending.baseline
    n = len(deltas)
    whole = 1.0 - 1e-9  # (a share of repetitions is exact at 0 and 1)
    flips = {"regressed": int((deltas <= -whole).sum()), "improved": int((deltas >= whole).sum())}
    bounds = {way: stats.share_upper_bound(flips[way], n) for way in ways}
    way = max(bounds, key=lambda name: bounds[name])
    if bounds[way] <= min_effect:
        return ""
    shares = pending.test != "mcnemar-exact"  # (the cases are shares of repetitions)
    return (
        f" (inside ±{_trim(min_effect * 100, 1)} points, but with {flips[way]} of {n} cases"
        f" {way}{' in every repetition' if shares else ''}, up to {_percent(bounds[way])}"
        " could have: no equivalence shown)"
    )


def _ranked_the_other_way(pending: Pending, ci: tuple[float, float]) -> str:
    """For graded scores, why a significant interval is no verdict: the signed-rank test found
    the cases' changes significant on the other side of the mean's (most cases a little
    lower, a few much higher). Its p then speaks against the interval's direction."""
    if not pending.graded:
        return ""
    deltas = pending.candidate - pending.baseline
    balance = stats.signed_rank_balance(deltas)
    mean_way = "up" if ci[0] > 0 else "down" if ci[1] < 0 else ""
    rank_way = "up" if balance > 0 else "down" if balance < 0 else ""
    if not mean_way or not rank_way or mean_way == rank_way:
        return ""
    moved = int((deltas > 0).sum() if rank_way == "up" else (deltas < 0).sum())
    changed = int((deltas != 0).sum())
    return (
        f" (the mean went {mean_way}, but by rank the cases went {rank_way}: {moved} of"
        f" {changed} changed cases; the test does not show the mean's direction)"
    )


def _too_few(verdict: str, ci: tuple[float, float], cases: int, min_effect: float) -> str:
    needed = stats.cases_to_show_equivalence(min_effect)
    if verdict == "inconclusive" and -min_effect <= ci[0] and ci[1] <= min_effect:
        if math.isinf(needed):
            return " (no change, but with a margin of 0 no number of cases can show equivalence)"
        return (
            f" (inside ±{_trim(min_effect * 100, 1)} points, but {cases} case(s) cannot show"
            f" equivalence: it takes {needed})"
        )
    return ""


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _reason(
    pending: Pending,
    base: float,
    cand: float,
    ci: tuple[float, float],
    p_adjusted: float,
    verdict: str,
) -> str:
    if pending.graded:
        change = f"{base:.3g} → {cand:.3g}, {_signed(cand - base, 1, 3)}"
        interval = f"95% CI {_signed(ci[0], 1, 3)} to {_signed(ci[1], 1, 3)}"
    else:
        change = f"{_percent(base)} → {_percent(cand)}, {_signed(cand - base, 100, 1)} points"
        interval = f"95% CI {_signed(ci[0], 100, 1)} to {_signed(ci[1], 100, 1)}"
    name = TEST_NAMES.get(pending.test, pending.test)
    return (
        f"{pending.label} {change}, {interval}, {name} {_p(pending.p_value)}"
        f" (Holm {_p(p_adjusted, bare=True)}): {verdict}"
    )


def _percent(value: float) -> str:
    return f"{_trim(value * 100, 1)}%"


def _signed(value: float, scale: float, digits: int) -> str:
    scaled = value * scale
    text = _trim(abs(scaled), digits)
    if text == "0":
        return "0"
    return ("+" if scaled > 0 else MINUS) + text


def _trim(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text or "0"


def _p(value: float, *, bare: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    if value < 0.001:
        return "< 0.001" if bare else "p < 0.001"
    shown = f"{value:.3f}" if value < 0.1 else f"{value:.2f}"
    return shown if bare else f"p = {shown}"
