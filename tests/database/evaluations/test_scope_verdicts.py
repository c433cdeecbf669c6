"""What a check's scope decides over a conversation, as the API describes it: under `each` the
share of passing turns is held to the metric's own comparison (operator, threshold, negate)
where a higher score passes, and every turn must pass elsewhere; under `last` (the default)
latency counts every turn."""

from __future__ import annotations

from typing import Any

import pytest

from database.evaluations.catalogue import score, validate_parameters
from database.evaluations.scoring import MetricSpec, Observation

# The reference ("Paris") is in turns 1 and 2: half the turns pass a `contains`.
HALF = ["Paris, then.", "Paris it is.", "Lyon, then.", "Lyon it is."]


def conversation(answers: list[str], turn_ms: float = 900, **fields: Any) -> Observation:
    turns = [
        {"turn": n, "user": f"message {n}", "text": text, "tool_calls": [], "latency_ms": turn_ms}
        for n, text in enumerate(answers, 1)
    ]
    return Observation(output=answers[-1], input="Plan a trip", turns=turns, **fields)


def metric(
    metric_type: str,
    *,
    operator: str = ">=",
    threshold: float = 1.0,
    negate: bool = False,
    **parameters: Any,
) -> MetricSpec:
    return MetricSpec(
        name=metric_type,
        type=metric_type,
        parameters=validate_parameters(metric_type, parameters),
        threshold=threshold,
        operator=operator,
        negate=negate,
    )


@pytest.mark.parametrize(
    ("operator", "negate", "threshold", "passed"),
    [
        (">=", False, 0.5, True),
        ("<", True, 0.5, True),  # not below a half: the same rule as >= 0.5
        (">", False, 0.5, False),
        ("<=", True, 0.5, False),  # not up to a half: the same rule as > 0.5
        (">", False, 0.25, True),
        ("<=", True, 0.25, True),
        (">=", False, 0.75, False),
        ("<", True, 0.75, False),
    ],
)
async def test_each_holds_the_share_of_passing_turns_to_the_metrics_own_comparison(
    operator, negate, threshold, passed
):
    spec = metric(
        "contains",
        value="Paris",
        scope="each",
        operator=operator,
        threshold=threshold,
        negate=negate,
    )
    verdict = await score(spec, conversation(HALF), None)
    assert (verdict.score, verdict.passed) == (0.5, passed)


async def test_rules_written_two_ways_give_the_same_verdict_on_the_same_turns():
    """Per-turn similarities 1, 1 and 0: `>= 0.5`, `> 0.5` and `< 0.5` negated each pass
    two turns of three, and so the metric."""
    answers = ["colour", "colour", "zzzzzz"]
    rules = [(">=", False), (">", False), ("<", True)]
    verdicts = [
        await score(
            metric(
                "similarity", value="colour", scope="each", operator=op, threshold=0.5, negate=no
            ),
            conversation(answers),
            None,
        )
        for op, no in rules
    ]
    assert [(round(v.score, 3), v.passed) for v in verdicts] == [(0.667, True)] * 3


@pytest.mark.parametrize(
    ("operator", "negate", "threshold"),
    [
        ("<=", False, 0.0),
        ("<", False, 0.5),
        (">=", True, 1.0),
        (">", True, 0.5),
        ("==", False, 0.0),
    ],
)
async def test_where_a_lower_score_passes_each_passes_only_when_every_turn_does(
    operator, negate, threshold
):
    """Each rule passes a turn without "Lyon": a share of such turns held to it would fail
    more the more turns pass."""
    rule = {"operator": operator, "negate": negate, "threshold": threshold}
    spec = metric("contains", value="Lyon", scope="each", **rule)
    most = await score(spec, conversation(["Paris", "Rome", "Nice", "Lyon"]), None)
    assert (most.score, most.passed) == (0.75, False)
    every = await score(spec, conversation(["Paris", "Rome", "Nice", "Oslo"]), None)
    assert (every.score, every.passed) == (1.0, True)


async def test_last_counts_every_turns_latency_as_the_api_describes(client):
    """Two turns of 900 ms: the conversation took 1800 ms, past a 1000 ms limit."""
    verdict = await score(
        metric("max-latency", ms=1000),
        conversation(["a", "b"], latency_ms=1800),
        None,
    )
    assert (verdict.passed, verdict.reason) == (False, "1800 ms > 1000.0")
    document = (await client.get("/openapi.json")).json()
    scope = document["components"]["schemas"]["MaxLatencyWithScope"]["properties"]["scope"]
    described = scope["description"]
    assert "latency, cost, tokens, steps and tool calls count every turn" in described
    assert "the last turn's;" not in described
    assert "passes the metric's own comparison" in described
