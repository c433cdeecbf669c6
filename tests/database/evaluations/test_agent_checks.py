"""The agent metrics, without a database: tool calls, their arguments, trajectories, step counts
and what the agent judges are shown."""

from __future__ import annotations

from typing import Any

import pytest

from database.evaluations import agent_checks, judges
from database.evaluations.catalogue import CATALOGUE, judge_prompt, validate_parameters
from database.evaluations.scoring import MetricSpec, Observation, ScoringError, decide


def call(name: str, arguments: dict[str, Any] | str | None = None, id: str = "") -> dict:
    return {"id": id or f"call-{name}", "name": name, "arguments": arguments or {}}


def want(name: str, arguments: dict[str, Any] | None = None, match: str | None = None) -> dict:
    expected: dict[str, Any] = {"name": name}
    if arguments is not None:
        expected["arguments"] = arguments
    if match is not None:
        expected["match"] = match
    return expected


def observe(calls: list[dict], wanted: list[dict] | None = None, **fields: Any) -> Observation:
    """The agent's calls and the test's expected_tool_calls (`expected` is its expected output)."""
    return Observation(
        output=fields.pop("output", "Done."),
        input=fields.pop("input", "Book me a trip to Paris"),
        tool_calls=calls,
        expected_tool_calls=wanted,
        **fields,
    )


def metric(metric_type: str, **parameters: Any) -> MetricSpec:
    """The metric as a run freezes it: its parameters validated and defaulted as stored."""
    return MetricSpec(
        name=metric_type,
        type=metric_type,
        parameters=validate_parameters(metric_type, parameters),
        threshold=CATALOGUE[metric_type].threshold,
    )


def check(metric_type: str, observation: Observation, **parameters: Any) -> tuple[float, str]:
    scorer = CATALOGUE[metric_type].check
    assert scorer is not None
    return scorer(metric(metric_type, **parameters), observation)


def passes(metric_type: str, observation: Observation, **parameters: Any) -> bool:
    value, _ = check(metric_type, observation, **parameters)
    return decide(metric(metric_type, **parameters), value)


PARIS = call("search", {"q": "paris"})
ROME = call("search", {"q": "rome"})
WEATHER = call("weather", {"city": "Paris"})
BOOK = call("book", {"city": "Paris", "date": "2025-06-01"})
SEARCH, FORECAST, BOOKING = want("search"), want("weather"), want("book")


# --- trajectory: every mode on its edge cases --------------------------------------------------

TRAJECTORIES = [
    # (mode, expected, actual, score, words in the reason)
    ("exact", [SEARCH, FORECAST], [PARIS, WEATHER], 1.0, "in order"),
    ("exact", [SEARCH, FORECAST], [WEATHER, PARIS], 0.0, "call 1: expected search"),
    ("exact", [SEARCH, FORECAST], [PARIS, WEATHER, BOOK], 2 / 3, "extra at the end: book"),
    ("exact", [SEARCH, FORECAST, BOOKING], [PARIS, WEATHER], 2 / 3, "missing at the end: book"),
    ("exact", [SEARCH], [], 0.0, "missing at the end: search"),
    ("exact", [], [], 1.0, "no tool calls"),
    ("exact", [], [PARIS], 0.0, "extra at the end: search"),
    ("exact", [SEARCH], [PARIS, ROME], 0.5, "extra at the end: search"),
    (
        "exact",
        [want("search", {"q": "paris"}), want("search", {"q": "rome"})],
        [PARIS, ROME],
        1.0,
        "",
    ),
    (
        "exact",
        [want("search", {"q": "paris"}), want("search", {"q": "rome"})],
        [ROME, PARIS],
        0.0,
        "call 2",
    ),
    ("in-order", [SEARCH, FORECAST, BOOKING], [PARIS, WEATHER, BOOK], 1.0, "in order"),
    ("in-order", [SEARCH, BOOKING], [PARIS, WEATHER, BOOK], 1.0, "among 3 calls"),
    (
        "in-order",
        [SEARCH, FORECAST, BOOKING],
        [WEATHER, PARIS, BOOK],
        2 / 3,
        "out of order: search",
    ),
    ("in-order", [SEARCH, FORECAST, BOOKING], [PARIS, BOOK], 2 / 3, "missing: weather"),
    ("in-order", [SEARCH, FORECAST, BOOKING], [BOOK, WEATHER, PARIS], 1 / 3, "out of order"),
    ("in-order", [SEARCH], [], 0.0, "missing: search"),
    ("in-order", [], [PARIS, WEATHER], 1.0, "no calls expected"),
    ("in-order", [], [], 1.0, "no calls expected"),
    # The same tool expected twice but called once: missing, not out of order.
    ("in-order", [SEARCH, SEARCH], [PARIS], 0.5, "missing: search"),
    ("in-order", [SEARCH, SEARCH], [PARIS, WEATHER, ROME], 1.0, ""),
    (
        "in-order",
        [want("search", {"q": "rome"}), want("search", {"q": "paris"})],
        [PARIS, ROME],
        0.5,
        'out of order: search({"q": "rome"})',
    ),
    ("any-order", [SEARCH, FORECAST], [WEATHER, PARIS], 1.0, "no others"),
    ("any-order", [SEARCH], [PARIS, WEATHER], 0.5, "extra: weather"),
    ("any-order", [SEARCH, FORECAST], [PARIS], 0.5, "missing: weather"),
    ("any-order", [SEARCH, FORECAST], [PARIS, BOOK], 0.5, "missing: weather; extra: book"),
    ("any-order", [SEARCH], [PARIS, ROME], 0.5, 'extra: search({"q": "rome"})'),
    ("any-order", [SEARCH, SEARCH], [PARIS], 0.5, "missing: search"),
    ("any-order", [SEARCH, SEARCH], [ROME, PARIS], 1.0, ""),
    ("any-order", [], [], 1.0, ""),
    ("any-order", [SEARCH], [], 0.0, "missing: search"),
    ("any-order", [], [PARIS], 0.0, "extra: search"),
    ("subset", [SEARCH, FORECAST, BOOKING], [WEATHER], 1.0, "1 of 3"),
    ("subset", [SEARCH, FORECAST], [PARIS, BOOK], 0.5, "not expected: book"),
    ("subset", [FORECAST], [WEATHER, WEATHER], 0.5, "not expected: weather"),
    ("subset", [SEARCH], [], 1.0, ""),
    ("subset", [], [], 1.0, ""),
    ("subset", [], [PARIS], 0.0, "not expected: search"),
    ("superset", [SEARCH, FORECAST], [BOOK, WEATHER, PARIS], 1.0, "(and 1 more)"),
    ("superset", [SEARCH, SEARCH], [PARIS], 0.5, "missing: search"),
    ("superset", [SEARCH, FORECAST, BOOKING], [WEATHER], 1 / 3, "missing: search, book"),
    ("superset", [SEARCH], [], 0.0, "missing: search"),
    ("superset", [], [PARIS], 1.0, ""),
]


@pytest.mark.parametrize(
    ("mode", "expected", "actual", "value", "words"),
    TRAJECTORIES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(TRAJECTORIES)],
)
def test_each_trajectory_mode_scores_partial_matches_and_says_why(
    mode, expected, actual, value, words
):
    score, reason = check("trajectory", observe(actual, expected), mode=mode)
    assert score == pytest.approx(value)
    assert words in reason, reason
    assert passes("trajectory", observe(actual, expected), mode=mode) is (value == 1.0)


@pytest.mark.parametrize("mode", ["any-order", "subset", "superset"])
def test_unordered_modes_match_one_to_one_at_best_not_greedily(mode):
    """A greedy pass would give the first call to the looser expectation and leave the
    argument-bound one unmatched: a maximum matching pairs both."""
    expected = [SEARCH, want("search", {"q": "paris"})]
    assert check("trajectory", observe([PARIS, ROME], expected), mode=mode)[0] == 1.0


def test_the_default_mode_is_exact():
    assert check("trajectory", observe([WEATHER, PARIS], [SEARCH, FORECAST]))[0] == 0.0
    assert check("trajectory", observe([PARIS, WEATHER], [SEARCH, FORECAST]))[0] == 1.0


def test_a_trajectory_without_expected_calls_is_an_error():
    with pytest.raises(ScoringError, match="expected_tool_calls"):
        check("trajectory", observe([PARIS], None), mode="subset")


# --- matching one call: exact, subset, schema, raw text ----------------------------------------

NESTED = call("book", {"city": "Paris", "filters": {"stars": 4, "area": "centre"}, "tags": ["a"]})
QUERY_SCHEMA = {
    "type": "object",
    "properties": {"q": {"type": "string", "minLength": 2}},
    "required": ["q"],
}


@pytest.mark.parametrize(
    ("actual", "expected", "matched"),
    [
        (PARIS, want("search"), True),
        (PARIS, want("weather"), False),
        (PARIS, want("search", {"q": "paris"}), True),
        (PARIS, want("search", {"q": "Paris"}), False),
        (BOOK, want("book", {"city": "Paris"}), False),  # exact: no key more, none less
        (BOOK, want("book", {"city": "Paris"}, "subset"), True),
        (BOOK, want("book", {"city": "Paris", "guests": 2}, "subset"), False),
        (NESTED, want("book", {"filters": {"stars": 4}}, "subset"), True),
        (NESTED, want("book", {"filters": {"stars": 5}}, "subset"), False),
        (NESTED, want("book", {"tags": []}, "subset"), False),  # lists are compared whole
        (call("n", {"k": 1}), want("n", {"k": 1.0}), True),
        (call("n", {"k": 1}), want("n", {"k": True}), False),
        (call("n", {"k": "1"}), want("n", {"k": 1}), False),
        (PARIS, want("search", QUERY_SCHEMA, "schema"), True),
        (call("search", {"q": "p"}), want("search", QUERY_SCHEMA, "schema"), False),
        (call("search", {"query": "paris"}), want("search", QUERY_SCHEMA, "schema"), False),
        # Raw text arguments (not a JSON object) match only a schema that takes a string.
        (call("search", "q=paris"), want("search"), True),
        (call("search", "q=paris"), want("search", {"q": "paris"}), False),
        (call("search", "q=paris"), want("search", {}, "subset"), False),
        (call("search", "q=paris"), want("search", QUERY_SCHEMA, "schema"), False),
        (call("search", "q=paris"), want("search", {"type": "string"}, "schema"), True),
    ],
)
def test_a_call_matches_by_name_and_arguments(actual, expected, matched):
    from_test = check("tool-call", observe([actual], [expected]))
    assert from_test[0] == (1.0 if matched else 0.0), from_test
    from_parameters = check("tool-call", observe([actual], None), **expected)
    assert from_parameters == from_test


# --- tool-call ---------------------------------------------------------------------------------


def test_the_parameters_call_wins_over_the_tests_expected_calls():
    observation = observe([WEATHER], [SEARCH, BOOKING])
    assert check("tool-call", observation, name="weather") == (1.0, "found weather")
    assert check("tool-call", observation)[0] == 0.0


def test_tool_call_scores_the_share_of_expected_calls_made_each_call_used_once():
    score, reason = check("tool-call", observe([PARIS, BOOK], [SEARCH, FORECAST, BOOKING]))
    assert score == pytest.approx(2 / 3)
    assert "missing weather" in reason and "book(" in reason
    assert check("tool-call", observe([PARIS], [SEARCH, SEARCH]))[0] == 0.5
    assert check("tool-call", observe([PARIS, ROME], [SEARCH, SEARCH]))[0] == 1.0
    assert not passes("tool-call", observe([PARIS], [SEARCH, FORECAST]))
    assert passes("tool-call", observe([WEATHER, BOOK, PARIS], [SEARCH, FORECAST]))


def test_tool_call_expecting_no_calls():
    assert check("tool-call", observe([], [])) == (1.0, "no tool calls, as expected")
    score, reason = check("tool-call", observe([PARIS], []))
    assert score == 0.0 and "expected no tool calls" in reason


def test_tool_call_without_any_expectation_is_an_error_saying_what_to_give():
    with pytest.raises(ScoringError) as raised:
        check("tool-call", observe([PARIS], None))
    assert "parameters.name" in str(raised.value) and "expected_tool_calls" in str(raised.value)


@pytest.mark.parametrize(
    ("expected", "words"),
    [
        ([{"name": "search", "match": "fuzzy"}], "expected_tool_calls[0].match"),
        ([SEARCH, {"arguments": {}}], "expected_tool_calls[1].name"),
        ([want("search", {"type": "nope"}, "schema")], "not a valid JSON schema"),
        ([{"name": "search", "args": {}}], "expected_tool_calls[0].args"),
        (["search"], "expected_tool_calls[0]"),
    ],
)
def test_a_tests_unusable_expected_calls_are_an_error_naming_the_entry(expected, words):
    for metric_type in ("tool-call", "trajectory"):
        with pytest.raises(ScoringError, match=r"the test's expected_tool_calls") as raised:
            check(metric_type, observe([PARIS], expected))
        assert words in str(raised.value)


def test_too_many_calls_to_compare_are_an_error_not_a_stall():
    many = [PARIS] * (agent_checks.MAX_CALLS + 1)
    with pytest.raises(ScoringError, match="tool calls"):
        check("trajectory", observe(many, [SEARCH]), mode="any-order")
    with pytest.raises(ScoringError, match="expected tool calls"):
        check("tool-call", observe([PARIS], [SEARCH] * (agent_checks.MAX_EXPECTED + 1)))


def test_a_schema_with_a_ref_to_nowhere_is_an_error():
    expected = [want("search", {"$ref": "#/definitions/none"}, "schema")]
    with pytest.raises(ScoringError, match=r"\$ref"):
        check("tool-call", observe([PARIS], expected))


# --- tool-args-schema --------------------------------------------------------------------------


def function(name: str, parameters: dict[str, Any] | None = None, description: str = "") -> dict:
    definition: dict[str, Any] = {"name": name, "description": description}
    if parameters is not None:
        definition["parameters"] = parameters
    return {"type": "function", "function": definition}


TOOLS = [
    function("search", QUERY_SCHEMA, "Search the web"),
    function(
        "book",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "guests": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "Book a hotel",
    ),
    function("ping"),  # no parameters: any object
]


def test_tool_args_schema_scores_the_share_of_valid_calls_naming_the_first_failure():
    calls = [PARIS, call("book", {"city": "Paris", "guests": [1, "two"]}), call("ping", {"x": 1})]
    score, reason = check("tool-args-schema", observe(calls, tools=TOOLS))
    assert score == pytest.approx(2 / 3)
    assert "1 of 3 calls invalid" in reason
    assert "call 2 (book)" in reason
    assert "'two' is not of type 'integer'" in reason and "arguments.guests[1]" in reason


def test_tool_args_schema_an_unknown_tool_is_an_invalid_call():
    score, reason = check("tool-args-schema", observe([call("lookup"), PARIS], tools=TOOLS))
    assert score == 0.5
    assert "call 1 (lookup): no tool of that name is defined" in reason
    assert check("tool-args-schema", observe([PARIS], tools=[]))[0] == 0.0


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({}, "'q' is a required property (at arguments)"),
        ({"q": "p"}, "(at arguments.q)"),
        ("q=paris", "is not of type 'object'"),
    ],
)
def test_tool_args_schema_reasons_give_the_message_and_path(arguments, words):
    score, reason = check("tool-args-schema", observe([call("search", arguments)], tools=TOOLS))
    assert score == 0.0
    assert words in reason, reason


def test_tool_args_schema_valid_calls_and_no_calls():
    calls = [PARIS, call("book", {"guests": [2]}), call("ping")]
    assert check("tool-args-schema", observe(calls, tools=TOOLS)) == (
        1.0,
        "all 3 calls have valid arguments",
    )
    assert check("tool-args-schema", observe([], tools=[])) == (1.0, "no tool calls")
    assert passes("tool-args-schema", observe(calls, tools=TOOLS))


def test_tool_args_schema_a_broken_tool_definition_is_an_error():
    with pytest.raises(ScoringError, match="'search': not a valid JSON schema"):
        check("tool-args-schema", observe([PARIS], tools=[function("search", {"type": 5})]))
    with pytest.raises(ScoringError, match=r"tools\[0\]"):
        check("tool-args-schema", observe([PARIS], tools=[{"type": "function"}]))


# --- step-count --------------------------------------------------------------------------------


def steps(count: int) -> list[dict[str, Any]]:
    return [{"text": f"step {i}", "tool_calls": [], "tool_results": []} for i in range(count)]


def test_step_count_at_and_over_the_limit():
    assert check("step-count", observe([], trajectory=steps(3)), max=3) == (1.0, "3 steps")
    assert check("step-count", observe([], trajectory=steps(4)), max=3) == (0.0, "4 steps > 3")
    assert check("step-count", observe([], trajectory=[]), max=1)[0] == 1.0
    assert passes("step-count", observe([], trajectory=steps(3)), max=3)
    assert not passes("step-count", observe([], trajectory=steps(4)), max=3)


# --- the agent judges --------------------------------------------------------------------------

TRAJECTORY = [
    {
        "text": "Let me look that up.",
        "tool_calls": [call("search", {"q": "hotels in Paris"}, id="c1")],
        "tool_results": [{"id": "c1", "name": "search", "content": "Hôtel Lutetia: 4 rooms free"}],
    },
    {
        "text": "",
        "tool_calls": [call("book", {"city": "Paris", "hotel": "Lutetia"}, id="c2")],
        "tool_results": [{"id": "c2", "name": "book", "content": {"confirmation": "XK-42"}}],
    },
    {"text": "Booked: confirmation XK-42.", "tool_calls": [], "tool_results": []},
]


def judged(metric_type: str, observation: Observation) -> str:
    return judge_prompt(metric(metric_type), observation)


@pytest.mark.parametrize("metric_type", ["task-completion", "tool-use-rationale"])
def test_the_agent_judges_see_the_task_and_every_steps_text_calls_and_results(metric_type):
    observation = observe(
        [],
        expected="A booking in Paris",
        output="Booked: confirmation XK-42.",
        trajectory=TRAJECTORY,
        tools=TOOLS,
    )
    prompt = judged(metric_type, observation)
    assert "Book me a trip to Paris" in prompt
    assert "Let me look that up." in prompt
    assert 'calls search({"q": "hotels in Paris"}) [call c1]' in prompt
    assert 'result of search [call c1]: "Hôtel Lutetia: 4 rooms free"' in prompt
    assert 'calls book({"city": "Paris", "hotel": "Lutetia"})' in prompt
    assert '{"confirmation": "XK-42"}' in prompt
    assert 'Step 3:\n  says: "Booked: confirmation XK-42."' in prompt
    assert '"score"' in prompt and '"reason"' in prompt


def test_task_completion_is_judged_against_the_expected_outcome_when_given():
    with_reference = judged(
        "task-completion", observe([], expected="A booking", trajectory=TRAJECTORY)
    )
    assert "A booking" in with_reference and "expected outcome" in with_reference
    without = judged("task-completion", observe([], trajectory=TRAJECTORY))
    assert "expected outcome" not in without
    assert "achieved" in without


def test_tool_use_rationale_lists_the_tools_available_and_asks_about_needless_calls():
    prompt = judged("tool-use-rationale", observe([], trajectory=TRAJECTORY, tools=TOOLS))
    assert '- search: "Search the web"' in prompt and '- book: "Book a hotel"' in prompt
    assert "- ping\n" in prompt  # no description
    assert "Unnecessary calls" in prompt and "redundant" in prompt
    assert "(none given)" in judged("tool-use-rationale", observe([], trajectory=TRAJECTORY))


def test_without_steps_the_judges_see_the_calls_or_that_there_were_none():
    prompt = judged("task-completion", observe([PARIS]))
    assert 'calls search({"q": "paris"})' in prompt
    assert "none recorded" in judged("tool-use-rationale", observe([]))


@pytest.mark.parametrize("metric_type", ["task-completion", "tool-use-rationale"])
def test_a_huge_trajectory_is_shown_bounded_first_and_last_steps_kept(metric_type):
    big = "x" * 50_000
    trajectory = [
        {
            "text": f"thinking {i} " + big,
            "tool_calls": [call("search", {"q": big}, id=f"c{i}")],
            "tool_results": [{"id": f"c{i}", "name": "search", "content": big}],
        }
        for i in range(2_000)
    ]
    observation = observe([], trajectory=trajectory, output=big * 4, input=big, tools=TOOLS * 300)
    prompt = judged(metric_type, observation)
    bound = judges.TRAJECTORY_CHARS + 3 * judges.TEXT_CHARS + judges.TOOLS_CHARS + 3_000
    assert len(prompt) < bound
    assert 'Step 1:\n  says: "thinking 0 ' in prompt
    assert 'Step 2000:\n  says: "thinking 1999 ' in prompt
    assert "steps left out" in prompt
    assert "more characters]" in prompt
