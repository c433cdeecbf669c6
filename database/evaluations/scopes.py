"""A check's scope: which answers of a conversation it scores (`SCOPES`), each turn's verdict
decided on its own and the turns' verdicts made into one."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from database.evaluations.scoring import (
    Check,
    MetricSpec,
    Observation,
    ScoringError,
    Verdict,
    decide,
    higher_passes,
    turn_observations,
)
from utils.check_budget import CHECK_SECONDS, OutOfTime, seconds_left

# Which answers of a conversation a check scores (a test without turns has one: its output).
SCOPE = "scope"
Scope = Literal["last", "each", "all", "any"]
SCOPES = (
    "Which answers of a conversation are checked: `last` (the default) the conversation as a "
    "whole: a text check reads the last turn's answer, while latency, cost, tokens, steps and "
    "tool calls count every turn; `each` every turn's on its own, the score being the share of "
    "turns that pass: where a higher score passes (`>=` or `>`, or `<=` or `<` negated) the "
    "metric passes when that share passes the metric's own comparison (`>= 0.5`: at least half "
    "the turns), elsewhere (`<=`, `<` or `==`, or `>=` or `>` negated) only when every turn "
    "passes; `all` every turn's, passing only if every turn does (the score is the lowest "
    "turn's); `any` every turn's, passing if one turn does (the score is the highest turn's). "
    "A turn passes by the metric's threshold, operator and negate. A test without turns checks "
    "its one answer, whatever the scope."
)
SHOWN_TURNS = 10  # turn numbers a reason lists


def answer_lengths(spec: MetricSpec, obs: Observation) -> list[int]:
    """The length of each answer the check's scope reads: every turn's, or the one answer."""
    if not obs.turns or spec.parameters.get(SCOPE, "last") == "last":
        return [len(obs.output)]
    return [len(str(turn.get("text") or "")) for turn in obs.turns]


def heavy_over_turns(spec: MetricSpec, obs: Observation) -> bool:
    """Whether the check reads every turn of a conversation and those turns hold much to read
    (each answer, and the reference each is compared with): scored on the loop, its work
    would be up to the turns' count times one answer's. A few short turns are checked at once,
    not queued behind other cases' patterns."""
    if not obs.turns or spec.parameters.get(SCOPE, "last") == "last":
        return False
    reference = len(str(spec.parameters.get("value") or "")) + len(obs.expected or "")
    read = sum(len(str(turn.get("text") or "")) + reference for turn in obs.turns)
    return read > HEAVY_TURNS_CHARS


HEAVY_TURNS_CHARS = 100_000


def check_in_scope(spec: MetricSpec, obs: Observation, check: Check) -> Verdict:
    """The check on the answers its scope names; ScoringError (naming the turn) if one fails
    to score."""
    scope: Scope = spec.parameters.get(SCOPE, "last")
    own = spec  # a check sees its type's parameters only: without the scope, if it has one
    if SCOPE in spec.parameters:
        own = replace(spec, parameters={k: v for k, v in spec.parameters.items() if k != SCOPE})
    if scope == "last" or not obs.turns:
        value, reason = check(own, obs)
        return Verdict(score=value, reason=reason, passed=decide(spec, value))
    turns = turn_observations(obs)
    scored: list[tuple[float, str, bool]] = []
    for number, turn in enumerate(turns, 1):
        try:
            seconds_left(CHECK_SECONDS)  # each turn is bounded; all of them together, too
            value, reason = check(own, turn)
        except OutOfTime as exc:
            raise ScoringError(
                f"turn {number} of {len(turns)}: not checked, the check {exc}"
            ) from None
        except ScoringError as exc:
            raise ScoringError(f"turn {number} of {len(turns)}: {exc}") from None
        scored.append((value, reason, decide(spec, value)))
    return _aggregated(scope, spec, scored)


def _aggregated(scope: Scope, spec: MetricSpec, scored: list[tuple[float, str, bool]]) -> Verdict:
    n = len(scored)
    passing = [i for i, (_, _, passed) in enumerate(scored) if passed]
    failing = [i for i, (_, _, passed) in enumerate(scored) if not passed]
    if scope == "any":
        chosen = passing or failing  # the best turn: one that passes if any does
        best = max(chosen, key=lambda i: scored[i][0])
        said = f"{_numbers(passing)} of {n} pass{'es' if len(passing) == 1 else ''}"
        said = said if passing else f"none of the {n} turns pass"
        return Verdict(scored[best][0], f"{said}: {scored[best][1]}", passed=bool(passing))
    if failing:
        said = f"{_numbers(failing)} of {n} fail{'s' if len(failing) == 1 else ''}"
        said += f": {scored[failing[0]][1]}"
    else:
        said = f"all {n} turns pass"
    if scope == "each":
        share = len(passing) / n
        return Verdict(share, said, passed=_share_passes(spec, share))
    worst = min(failing or passing, key=lambda i: scored[i][0])  # the worst: one that fails
    if not failing:
        said += f": {scored[worst][1]}"
    return Verdict(scored[worst][0], said, passed=not failing)


def _share_passes(spec: MetricSpec, share: float) -> bool:
    """Whether `each`'s share of passing turns passes the metric. More passing turns is better,
    so the share is held to the metric's own comparison only where a higher score passes; where
    a lower one does (or `==`), that comparison would fail the share as more turns pass, and
    every turn must pass instead."""
    if higher_passes(spec.operator, spec.negate):
        return decide(spec, share)
    return share == 1


def _numbers(turns: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in turns[:SHOWN_TURNS])
    more = f" and {len(turns) - SHOWN_TURNS} more" if len(turns) > SHOWN_TURNS else ""
    return f"turn{'s' if len(turns) > 1 else ''} {shown}{more}"
