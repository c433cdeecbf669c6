"""How a finished run (or a comparison) ends the command: its exit code, and the tables
printed for a person (the failures, and the comparison with the baseline per metric)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from cli.client import Client
from cli.terminal import cell

FailOn = Literal["regression", "failures", "never"]

OK, GATE_FAILED, NOT_JUDGED, USAGE, UNREACHABLE = 0, 1, 2, 3, 4
INTERRUPTED = 130  # detached by Ctrl-C: the run goes on
# A gate's default `max_error_rate`: a run made with no gate is held to it too.
UNGATED_MAX_ERROR_RATE = 0.1
SHOWN_FAILURES = 20
EXCERPT = 80
_VERDICT_STYLE = {
    "improved": "green",
    "regressed": "bold red",
    "equivalent": "",
    "inconclusive": "yellow",
}


@dataclass(frozen=True)
class Outcome:
    code: int
    reason: str


def outcome(run: dict[str, Any], fail_on: FailOn) -> Outcome:
    """0: nothing to fail on; 1: the gate failed (a regression or a floor), or with
    fail_on=failures a case failed; 2: the run cannot be judged (it did not complete, or its
    gate is undecided: too many errors, an inconclusive comparison)."""
    status, gate = run["status"], run.get("gate_result")
    if status == "completed" and gate is not None and gate["status"] == "failed":
        return Outcome(GATE_FAILED, "gate failed: " + "; ".join(gate["reasons"]))
    # A failed case fails the command whatever else is in doubt, as a missed floor fails the
    # gate: a run that did not complete, or an undecided gate, beside it must not turn the
    # failure into a warning.
    failed = run["counts"]["failed"]
    if fail_on == "failures" and failed:
        ended = "" if status == "completed" else f" (and the run did not complete: it is {status})"
        return Outcome(GATE_FAILED, f"{failed} case(s) failed{ended}")
    if status != "completed":
        why = f" ({run['error']})" if run.get("error") else ""
        return Outcome(NOT_JUDGED, f"the run did not complete: it is {status}{why}")
    if gate is not None and gate["status"] == "undecided":
        return Outcome(NOT_JUDGED, "gate undecided: " + "; ".join(gate["reasons"]))
    if gate is None:
        counts = run["counts"]
        if counts["errored"] > UNGATED_MAX_ERROR_RATE * counts["done"]:
            return Outcome(
                NOT_JUDGED,
                f"no gate, and {counts['errored']} of {counts['done']} results errored (more"
                f" than a gate's default {UNGATED_MAX_ERROR_RATE:.0%})",
            )
        if not counts["passed"] + counts["failed"]:
            return Outcome(NOT_JUDGED, "no gate, and no result was rated")
    notes = "; ".join(gate["reasons"]) if gate and gate["reasons"] else ""
    return Outcome(OK, "gate passed" + (f" ({notes})" if notes else "") if gate else "done")


_EXIT_WORDS = {
    OK: "PASSED",
    GATE_FAILED: "FAILED",
    NOT_JUDGED: "NOT JUDGED",
    INTERRUPTED: "DETACHED",
    UNREACHABLE: "UNREACHABLE",
}


def exit_word(code: int) -> str:
    return _EXIT_WORDS.get(code, "ERROR")


def compare(
    client: Client, run_id: str, baseline: str, *, min_effect: float | None
) -> dict[str, Any]:
    """The comparison as a gate makes it: pairing only tests whose content did not change, and
    changes inside ± `min_effect` (the gate's; None: the server's default) equivalent."""
    return dict(
        client.get(
            f"/runs/{run_id}/compare",
            baseline=baseline,
            include_changed=False,
            min_effect=min_effect,
        )
    )


def comparison_outcome(
    comparison: dict[str, Any], gate: dict[str, Any], evaluated: Collection[str] = ()
) -> Outcome:
    """The server's rule for the run's `gate` (database/results/gates.py), compared with this
    baseline: a regression of what `fail_on` names (the overall pass rate and every metric's
    unless it lists metrics, the listed ones then; `never` compares as `regression`, since a
    comparison is what was asked), or more of the baseline's tests missing than `max_dropped`,
    fails it (1); else one of them inconclusive, and not shown no worse than the margin, or
    the run's share of errored results above `max_error_rate` (10% unless the gate says) or
    above its baseline's by more than the margin, leaves it undecided (2); else it passes (0).
    A listed metric the comparison lacks names the run without it: the baseline when
    `evaluated` (the run's evaluated metrics) holds it, else this run."""
    fail_on = gate.get("fail_on", "regression")
    named = fail_on if isinstance(fail_on, list) else None
    metrics = {metric["name"]: metric["pass_rate"] for metric in comparison["metrics"]}
    if named is None:
        tested = [comparison["overall"], *metrics.values()]
    else:
        tested = [metrics[name] for name in named if name in metrics]
    regressed = [t["reason"] for t in tested if t["verdict"] == "regressed"]
    regressed += _too_many_dropped(comparison, gate.get("max_dropped"))
    if regressed:
        return Outcome(GATE_FAILED, "regressed: " + "; ".join(regressed))
    doubts = [
        t["reason"]
        for t in tested
        if t["verdict"] == "inconclusive" and not t.get("not_worse", False)
    ]
    doubts += [
        f"{name}: not compared (the baseline has no such metric)"
        if name in evaluated
        else f"{name}: not compared (this run has no evaluation of it)"
        for name in named or ()
        if name not in metrics
    ]
    reasons = _too_many_errors(comparison, gate.get("max_error_rate", UNGATED_MAX_ERROR_RATE))
    reasons += ["inconclusive: " + "; ".join(doubts)] if doubts else []
    reasons += _errors_beside_baseline(comparison)
    if reasons:
        return Outcome(NOT_JUDGED, "; ".join(reasons))
    return Outcome(OK, "no regression")


def _too_many_dropped(comparison: dict[str, Any], allowed: int | None) -> list[str]:
    dropped = comparison["cases"]["only_in_baseline"]
    if allowed is None or dropped <= allowed:
        return []
    return [
        f"{dropped} of the baseline's tests are not in this run, more than the {allowed}"
        " allowed (max_dropped)"
    ]


# A share a rounding error above the margin is not above it (gates._ROUNDING).
_ROUNDING = 1e-9


def _too_many_errors(comparison: dict[str, Any], max_error_rate: float) -> list[str]:
    """The gate's doubt when more of the run's results errored than its max_error_rate."""
    errors = comparison.get("errors")
    if not errors or not errors["run"]["results"]:
        return []
    errored, results = errors["run"]["errored"], errors["run"]["results"]
    if errored / results <= max_error_rate:
        return []
    allowed = f"{max_error_rate:.0%}"
    return [f"{errored} of {results} results errored, above the allowed share of {allowed}"]


def _errors_beside_baseline(comparison: dict[str, Any]) -> list[str]:
    """The gate's doubt when the run errs more than its baseline by more than `min_effect`
    (nothing from a server whose comparison does not count errors)."""
    errors = comparison.get("errors")
    if not errors or not errors["run"]["results"]:
        return []
    errored, results = errors["run"]["errored"], errors["run"]["results"]
    base = errors["baseline"]
    share = errored / results
    baseline_share = base["errored"] / base["results"] if base["results"] else 0.0
    min_effect = comparison["method"]["min_effect"]
    if share - baseline_share <= min_effect + _ROUNDING:
        return []
    return [
        f"{errored} of {results} results errored ({share:.1%}), against {baseline_share:.1%}"
        f" of the baseline's: more than {min_effect * 100:g} points above, and what they would"
        " have shown is unknown"
    ]


def summary_line(run: dict[str, Any], pass_rate: float | None) -> str:
    """The run's counts, and its pass rate as the server has it (the mean over cases of each
    case's share of passing repetitions: with repetitions, not passed / rated results)."""
    counts = run["counts"]
    rate = "n/a" if pass_rate is None else f"{pass_rate:.1%}"
    return (
        f"Run {run['id']} {run['status']}: {counts['passed']} passed, {counts['failed']} failed,"
        f" {counts['errored']} errored of {counts['total']} (pass rate {rate}),"
        f" ${run.get('spent') or 0:.4f}"
    )


def failures_table(failures: list[dict[str, Any]], total_failing: int) -> Table | None:
    """The failed and errored cases seen, by position: why each failed, and what it said."""
    if not failures:
        return None
    table = Table(title="Failures", title_justify="left", show_lines=False)
    for column in ("#", "test", "status", "why", "output"):
        table.add_column(column, overflow="fold")
    for data in sorted(failures, key=lambda d: (d["position"], d["repetition"]))[:SHOWN_FAILURES]:
        table.add_row(
            f"{data['position']}" + (f".{data['repetition']}" if data["repetition"] else ""),
            (data.get("test_id") or "")[-12:],  # time-ordered ids share their start
            data["status"],
            cell(_why(data)),
            cell(_excerpt(data.get("output"))),
        )
    if total_failing > SHOWN_FAILURES:
        table.caption = f"… and {total_failing - SHOWN_FAILURES} more"
    return table


def comparison_table(comparison: dict[str, Any]) -> Table:
    """Pass rates per metric against the baseline, with the paired interval and the verdict."""
    table = Table(
        title=f"Against baseline {comparison['baseline_run_id']}: {comparison['verdict']}",
        title_justify="left",
    )
    for column in ("metric", "baseline", "this run", "Δ (95% CI)", "p (Holm)", "verdict"):
        table.add_column(column)
    rows = [("overall", comparison["overall"])]
    rows += [(metric["name"], metric["pass_rate"]) for metric in comparison["metrics"]]
    for name, tested in rows:
        verdict = tested["verdict"]
        style = _VERDICT_STYLE.get(verdict, "")
        table.add_row(
            cell(name),
            _share(tested["baseline"]),
            _share(tested["candidate"]),
            _delta(tested),
            "" if tested["p_adjusted"] is None else f"{tested['p_adjusted']:.3g}",
            f"[{style}]{verdict}[/]" if style else verdict,
        )
    return table


def print_tables(console: Console, *tables: Table | None) -> None:
    for table in tables:
        if table is not None:
            console.print(table)


def _why(data: dict[str, Any]) -> str:
    if data["status"] == "errored":
        return f"{data.get('error_type')}: {data.get('error_message') or ''}".strip()
    failing = [e for e in data.get("evaluations") or [] if not e["passed"]]
    return "; ".join(f"{e['metric']}: {e['reason']}" for e in failing)[:200]


def _excerpt(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1] + "…"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _delta(tested: dict[str, Any]) -> str:
    if tested["delta"] is None:
        return ""
    text = f"{tested['delta']:+.1%}"
    if tested.get("ci"):
        low, high = tested["ci"]
        text += f" [{low:+.1%}, {high:+.1%}]"
    return text
