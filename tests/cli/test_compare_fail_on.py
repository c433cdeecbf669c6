"""`assay compare` holds what the run's gate's `fail_on` names: listed metrics alone, a metric
the baseline lacks leaving it undecided, as the server's gate does."""

from __future__ import annotations

from typing import Any

from cli.outcome import GATE_FAILED, NOT_JUDGED, OK, comparison_outcome


def _tested(verdict: str, reason: str) -> dict[str, Any]:
    return {"verdict": verdict, "reason": reason, "not_worse": verdict != "regressed"}


def _comparison(overall: str, **metrics: str) -> dict[str, Any]:
    return {
        "overall": _tested(overall, f"overall {overall}"),
        "metrics": [
            {"name": name, "pass_rate": _tested(verdict, f"{name} {verdict}")}
            for name, verdict in metrics.items()
        ],
        "cases": {"only_in_baseline": 0},
        "method": {"min_effect": 0.02},
    }


def test_a_gate_listing_metrics_holds_those_alone() -> None:
    comparison = _comparison("regressed", polite="regressed", correct="improved")
    assert comparison_outcome(comparison, {}).code == GATE_FAILED
    assert comparison_outcome(comparison, {"fail_on": "never"}).code == GATE_FAILED
    assert comparison_outcome(comparison, {"fail_on": ["correct"]}).code == OK
    failed = comparison_outcome(comparison, {"fail_on": ["correct", "polite"]})
    assert (failed.code, failed.reason) == (GATE_FAILED, "regressed: polite regressed")


def test_a_listed_metric_the_comparison_lacks_leaves_it_undecided() -> None:
    unknown = comparison_outcome(_comparison("equivalent"), {"fail_on": ["gone"]}, {"gone"})
    assert unknown.code == NOT_JUDGED
    assert "gone: not compared (the baseline has no such metric)" in unknown.reason
    lacking = comparison_outcome(_comparison("equivalent"), {"fail_on": ["gone"]})
    assert "gone: not compared (this run has no evaluation of it)" in lacking.reason
