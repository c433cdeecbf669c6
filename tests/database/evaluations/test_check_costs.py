"""What scoring a check costs, without a database: the tool-call checks do not check the test's
schemas again, text checks that read much are scored off the event loop, every check's own
pieces of work keep to its budget, and JSON holding a very long integer is still JSON."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from database.evaluations import checks
from database.evaluations.catalogue import CATALOGUE, score, validate_parameters
from database.evaluations.scoring import MetricSpec, Observation, Verdict
from utils import check_budget, save_checks


def spec(metric_type: str, **parameters: Any) -> MetricSpec:
    return MetricSpec(name=metric_type, type=metric_type, parameters=parameters, threshold=1.0)


async def scored(metric: MetricSpec, observation: Observation) -> Verdict:
    return await score(metric, observation, None)


# --- the test's expected tool calls: read as saved, their schemas not checked again ----------


def _large_schema(chars: int = 19_800) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    while len(json.dumps(properties)) < chars:
        i = len(properties)
        properties[f"p{i}"] = {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": i}]}
    return {"type": "object", "properties": properties}


@pytest.fixture
def schema_checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each schema the tool-call checks check against its metaschema (checked all the same)."""
    checked: list[Any] = []
    real = save_checks.check_json_schema

    def counted(value: Any) -> Any:
        checked.append(value)
        return real(value)

    monkeypatch.setattr(save_checks, "check_json_schema", counted)
    return checked


@pytest.mark.parametrize(
    ("metric_type", "parameters"), [("tool-call", {}), ("trajectory", {"mode": "exact"})]
)
async def test_the_tests_expected_schemas_are_not_checked_again_when_scored(
    schema_checks: list[Any], metric_type: str, parameters: dict[str, Any]
) -> None:
    # 100 expected calls with 20 KB schemas each: checking them again held a check thread
    # 40 s a result, which spent the check's budget before its first validation.
    expected = [{"name": "t", "match": "schema", "arguments": _large_schema()}] * 100
    observation = Observation(
        output="",
        input="q",
        tool_calls=[{"id": "1", "name": "t", "arguments": {}}],
        expected_tool_calls=expected,
    )
    verdict = await scored(spec(metric_type, **parameters), observation)
    assert schema_checks == []
    assert verdict.error is None and verdict.score == pytest.approx(0.01)


def test_a_metrics_own_schema_is_still_checked_when_saved(schema_checks: list[Any]) -> None:
    schema = {"type": "object", "required": ["q"]}
    validate_parameters("tool-call", {"name": "search", "match": "schema", "arguments": schema})
    assert schema_checks == [schema]
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        validate_parameters("tool-call", {"name": "s", "match": "schema", "arguments": {"type": 5}})


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "nope"},
        {"properties": []},
        {"required": 5},
        {"enum": 5},
        {"properties": {"a": {"minLength": "x"}}},
        {"properties": {"n": {"multipleOf": 0}}},
    ],
)
@pytest.mark.parametrize("metric_type", ["tool-call", "trajectory"])
async def test_a_broken_stored_schema_is_a_scoring_error_naming_it(
    metric_type: str, broken: dict[str, Any]
) -> None:
    observation = Observation(
        output="",
        input="q",
        tool_calls=[{"id": "1", "name": "t", "arguments": {"a": "b", "n": 3}}],
        expected_tool_calls=[{"name": "t"}, {"name": "t", "match": "schema", "arguments": broken}],
    )
    verdict = await scored(spec(metric_type), observation)
    assert verdict.error is not None
    assert verdict.error.startswith(
        "the test's expected_tool_calls[1].arguments: not a valid JSON schema ("
    )


async def test_a_broken_schema_of_the_metric_is_a_scoring_error_naming_its_parameters() -> None:
    metric = spec("tool-call", name="t", match="schema", arguments={"type": "nope"})
    observation = Observation(output="", input="q", tool_calls=[{"name": "t", "arguments": {}}])
    verdict = await scored(metric, observation)
    assert verdict.error is not None and verdict.error.startswith("parameters.arguments: not a")


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        ({"name": "t", "arguments": ["a"]}, "expected_tool_calls[0].arguments"),
        ({"name": "", "match": "exact"}, "expected_tool_calls[0].name"),
        ({"name": "t", "match": "fuzzy"}, "expected_tool_calls[0].match"),
        ({"name": "t", "extra": 1}, "expected_tool_calls[0].extra"),
        (5, "expected_tool_calls[0]"),
    ],
)
async def test_a_stored_expectation_of_the_wrong_shape_is_still_a_scoring_error(
    stored: Any, field: str
) -> None:
    observation = Observation(output="", input="q", expected_tool_calls=[stored])
    verdict = await scored(spec("tool-call"), observation)
    assert verdict.error is not None and field in verdict.error


# --- every check's own pieces of work keep to its budget --------------------------------------


@pytest.fixture
def spent_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check's budget spent as soon as it starts: a check that consults it between its
    pieces of work errs, one that does not scores on."""
    monkeypatch.setattr(check_budget, "CHECK_SECONDS", 0.0)


@pytest.mark.parametrize(
    ("metric", "observation"),
    [
        (
            spec("tool-call"),  # exact arguments: no schema validation consults it for them
            Observation(
                output="",
                input="q",
                tool_calls=[{"name": "t", "arguments": {"a": 1}}],
                expected_tool_calls=[{"name": "t", "arguments": {"a": 1}}],
            ),
        ),
        (
            spec("trajectory", mode="any-order"),
            Observation(
                output="",
                input="q",
                tool_calls=[{"name": "t", "arguments": {}}],
                expected_tool_calls=[{"name": "t"}],
            ),
        ),
        (spec("contains-all", values=["a", "b"]), Observation(output="ab", input="q")),
        (spec("contains-any", values=["x", "b"]), Observation(output="ab", input="q")),
        (spec("contains", value="b"), Observation(output="ab", input="q")),
    ],
)
async def test_checks_consult_their_budget_between_their_pieces_of_work(
    spent_budget: None, metric: MetricSpec, observation: Observation
) -> None:
    verdict = await scored(metric, observation)
    assert verdict.error == "the check took longer than 0 s in all"


# --- text checks: off the loop when they read much, the same verdicts ------------------------


def _observation(output: str) -> Observation:
    return Observation(output=output, input="q")


@pytest.mark.parametrize("metric_type", ["contains-all", "contains-any"])
def test_looking_for_many_long_values_in_a_long_answer_is_scored_off_the_loop(
    metric_type: str,
) -> None:
    declared = CATALOGUE[metric_type]
    values = ["ab" * 5_000] * 200
    assert declared.in_thread(spec(metric_type, values=values), _observation("a" * 100_000))
    assert not declared.in_thread(spec(metric_type, values=["ab"] * 20), _observation("a" * 4000))


@pytest.mark.parametrize("metric_type", ["equals", "contains", "icontains", "starts-with"])
def test_a_long_answer_is_compared_off_the_loop(metric_type: str) -> None:
    declared = CATALOGUE[metric_type]
    assert declared.in_thread(spec(metric_type, value="x"), _observation("a" * 600_000))
    assert not declared.in_thread(spec(metric_type, value="x"), _observation("a" * 10_000))


def test_every_turn_read_counts_towards_reading_much() -> None:
    turns = [{"turn": i, "user": "u", "text": "a" * 20_000} for i in range(30)]
    metric = spec("contains-all", values=["b"] * 10, scope="each")
    observation = Observation(output="a" * 20_000, input="q", turns=turns)
    assert checks.reads_much(metric, observation)
    assert not checks.reads_much(spec("contains-all", values=["b"] * 10), observation)


def test_a_long_answer_searched_by_windows_finds_what_in_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checks, "SEARCH_WINDOW", 5)  # occurrences across every boundary
    chance = random.Random(7)
    for _ in range(3000):
        text = "".join(chance.choice("ab") for _ in range(chance.randint(0, 40)))
        value = "".join(chance.choice("ab") for _ in range(chance.randint(1, 8)))
        assert checks._holds(text, value) == (value in text), (text, value)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (spec("contains-all", values=["x", "a", "y", "a"]), (0.5, "missing ['x', 'y']")),
        (spec("contains-all", values=["A", "b"], case_sensitive=False), (1.0, "all found")),
        (spec("contains-any", values=["x", "b", "a"]), (1.0, "found 'b'")),
        (spec("contains-any", values=["x", "y"]), (0.0, "none found")),
    ],
)
async def test_the_verdicts_of_a_long_answer_are_those_of_a_short_one(
    monkeypatch: pytest.MonkeyPatch, metric: MetricSpec, expected: tuple[float, str]
) -> None:
    monkeypatch.setattr(checks, "SEARCH_WINDOW", 1_000)
    long_answer = "-" * 2_000_000 + "ab" + "-" * 999  # the values across a window's edge
    assert checks.reads_much(metric, _observation(long_answer))
    for answer in ("ab", long_answer):
        verdict = await scored(metric, _observation(answer))
        assert (verdict.score, verdict.reason) == expected


# --- JSON holding an integer longer than int() reads -----------------------------------------

LONG = "7" * 5_000  # past Python's 4,300 digits


@pytest.mark.parametrize("document", [LONG, f'{{"a": [-{LONG}, 1]}}', f"[{LONG}, 1.5e3]"])
async def test_a_very_long_integer_is_json(document: str) -> None:
    verdict = await scored(spec("is-json"), _observation(document))
    assert (verdict.score, verdict.reason, verdict.error) == (1.0, "valid JSON", None)


@pytest.mark.parametrize(("document", "why"), [(f"[{LONG}, NaN]", "NaN"), (f"[{LONG},]", "")])
async def test_what_is_not_json_stays_not_json_beside_a_long_integer(
    document: str, why: str
) -> None:
    for metric in (spec("is-json"), spec("json-schema", schema={"type": "array"})):
        verdict = await scored(metric, _observation(document))
        assert verdict.score == 0.0 and verdict.error is None
        assert verdict.reason.startswith("not JSON") and why in verdict.reason


async def test_a_schema_is_not_checked_against_a_very_long_integer_and_says_why() -> None:
    metric = spec("json-schema", schema={"type": "object"})
    verdict = await scored(metric, _observation(f'{{"a": -{LONG}}}'))
    assert verdict.error == (
        "the answer holds an integer of 5,000 digits: a schema is checked against integers of"
        " at most 4,300"
    )
    short = await scored(spec("json-schema", schema={"type": "integer"}), _observation("7" * 4300))
    assert (short.score, short.error) == (1.0, None)
