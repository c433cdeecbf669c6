"""Conversation metrics, without a database: the judges of a whole transcript, and the scope of
a deterministic check (which turns' answers it scores)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from pydantic import ValidationError

from database.evaluations import conversation_judges, judges
from database.evaluations.catalogue import (
    CATALOGUE,
    for_case,
    given_parameters,
    judge_prompt,
    score,
    validate_parameters,
)
from database.evaluations.checks import matches_regex
from database.evaluations.scoring import MetricSpec, Observation, ScoringError, Verdict
from tests.helpers import longest_stall
from utils.check_budget import one_budget, seconds_left

CONVERSATION_JUDGES = ["goal-completion", "knowledge-retention", "role-adherence", "turn-relevance"]
SCOPES = ["last", "each", "all", "any"]


def turn(number: int, user: str, text: str, calls: list[dict] | None = None, **more: Any) -> dict:
    return {"turn": number, "user": user, "text": text, "tool_calls": calls or [], **more}


# The reference ("Paris") is said on turns 1 and 3 only.
TURNS = [
    turn(1, "I want to visit Paris in May.", "Paris in May is lovely."),
    turn(
        2,
        "Find me a hotel.",
        "Which city?",
        [{"id": "c1", "name": "search", "arguments": {"q": "hotels"}}],
    ),
    turn(3, "I told you already.", "Sorry: here are hotels in Paris."),
    turn(4, "Thanks!", "You are welcome."),
]


def conversation(turns: list[dict] | None = None, **fields: Any) -> Observation:
    turns = TURNS if turns is None else turns
    return Observation(
        output=turns[-1]["text"] if turns else fields.pop("output"),
        input=fields.pop("input", "Plan a trip"),
        turns=turns,
        **fields,
    )


def metric(metric_type: str, **parameters: Any) -> MetricSpec:
    """The metric as a run freezes it: its parameters validated and defaulted as stored."""
    threshold = parameters.pop("threshold", CATALOGUE[metric_type].threshold)
    negate = parameters.pop("negate", False)
    return MetricSpec(
        name=metric_type,
        type=metric_type,
        parameters=validate_parameters(metric_type, parameters),
        threshold=threshold,
        negate=negate,
    )


async def scored(spec: MetricSpec, observation: Observation) -> Verdict:
    return await score(spec, observation, None)


# --- the judges of a conversation ---------------------------------------------------------------


def quoted(text: str) -> str:
    """Text as the transcript shows what someone wrote: JSON, on one line."""
    return json.dumps(text, ensure_ascii=False)


def judged(metric_type: str, observation: Observation) -> str:
    return judge_prompt(metric(metric_type), observation)


@pytest.mark.parametrize("metric_type", CONVERSATION_JUDGES)
def test_the_judges_see_every_turn_its_messages_answers_and_tool_calls(metric_type):
    prompt = judged(metric_type, conversation())
    for number, each in enumerate(TURNS, 1):
        assert f"Turn {number}:\n  user: {quoted(each['user'])}" in prompt
        assert f"  assistant: {quoted(each['text'])}" in prompt
    assert 'assistant calls search({"q": "hotels"})' in prompt
    assert prompt.index("Turn 1:") < prompt.index("Turn 2:") < prompt.index("Turn 4:")
    assert "The conversation, 4 turns" in prompt
    assert '"score"' in prompt and '"reason"' in prompt


def test_goal_completion_is_judged_against_the_users_goal_or_else_the_tests_input():
    with_goal = judged("goal-completion", conversation(goal="Book a hotel in Paris"))
    assert "The user's goal:\n<goal>\nBook a hotel in Paris\n</goal>" in with_goal
    assert "achieved the user's goal" in with_goal
    assert "expected outcome" not in with_goal
    without = judged("goal-completion", conversation(expected="A hotel booked in Paris"))
    assert "The user's goal (the test's input):\n<goal>\nPlan a trip\n</goal>" in without
    assert "The expected outcome (a reference):\n<expected>\nA hotel booked in Paris" in without


def test_role_adherence_is_judged_against_the_role_given_or_the_one_implied():
    role = "You are Ada, the travel agency's assistant. Only talk about travel."
    with_role = judged("role-adherence", conversation(role=role))
    assert f"The assistant's role (its system prompt):\n<role>\n{role}\n</role>" in with_role
    assert "every turn" in with_role
    without = judged("role-adherence", conversation())
    assert "none was given" in without and "the role the conversation implies" in without


def test_knowledge_retention_and_turn_relevance_say_what_to_score():
    retention = judged("knowledge-retention", conversation())
    assert "earlier turns" in retention and "asking again" in retention
    relevance = judged("turn-relevance", conversation())
    assert "share of assistant turns that are relevant" in relevance
    assert "0.75" in relevance


@pytest.mark.parametrize("metric_type", CONVERSATION_JUDGES)
def test_a_single_answer_is_judged_as_a_conversation_of_one_turn(metric_type):
    call = {"id": "c1", "name": "search", "arguments": {"q": "x"}}
    single = Observation(output="It is Paris.", input="Capital of France?", tool_calls=[call])
    prompt = judged(metric_type, single)
    assert "The conversation, 1 turn " in prompt
    assert 'Turn 1:\n  user: "Capital of France?"' in prompt
    assert '  assistant: "It is Paris."' in prompt
    assert 'assistant calls search({"q": "x"})' in prompt
    assert "Turn 2:" not in prompt


@pytest.mark.parametrize("metric_type", CONVERSATION_JUDGES)
def test_a_huge_transcript_is_shown_bounded_first_and_last_turns_kept(metric_type):
    big = "x" * 50_000
    calls = [{"id": "c", "name": "search", "arguments": {"q": big}}] * 20
    turns = [turn(i, f"question {i} " + big, f"answer {i} " + big, calls) for i in range(1, 501)]
    observation = conversation(turns, goal=big, role=big, expected=big, input=big)
    prompt = judged(metric_type, observation)
    bound = conversation_judges.TRANSCRIPT_CHARS + 3 * judges.TEXT_CHARS + 3_000
    assert len(prompt) < bound
    assert 'Turn 1:\n  user: "question 1 ' in prompt
    assert 'Turn 500:\n  user: "question 500 ' in prompt
    assert "turns left out" in prompt
    assert "more characters]" in prompt
    assert "The conversation, 500 turns" in prompt


# --- the scope of a check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "value", "passed"),
    [("last", 0.0, False), ("each", 0.5, False), ("all", 0.0, False), ("any", 1.0, True)],
)
async def test_each_scope_scores_the_turns_answers(scope, value, passed):
    verdict = await scored(metric("contains", value="Paris", scope=scope), conversation())
    assert (verdict.score, verdict.passed, verdict.error) == (value, passed, None)


async def test_the_reason_names_the_turns_that_fail_or_pass():
    each = await scored(metric("contains", value="Paris", scope="each"), conversation())
    assert each.reason == "turns 2, 4 of 4 fail: reference not found"
    every = await scored(metric("contains", value="Paris", scope="all"), conversation())
    assert every.reason == each.reason
    one = await scored(metric("contains", value="Paris", scope="any"), conversation())
    assert one.reason == "turns 1, 3 of 4 pass: contains the reference"
    last = await scored(metric("contains", value="Paris"), conversation())
    assert last.reason == "reference not found"  # the last answer's, as without turns
    said = await scored(metric("regex", pattern=r"\w", scope="all"), conversation())
    assert (said.passed, said.reason) == (True, "all 4 turns pass: pattern matches")
    nowhere = await scored(metric("contains", value="Rome", scope="any"), conversation())
    assert (nowhere.score, nowhere.reason) == (0.0, "none of the 4 turns pass: reference not found")
    two = conversation(TURNS[:2])
    single = await scored(metric("contains", value="Paris", scope="each"), two)
    assert single.reason == "turn 2 of 2 fails: reference not found"
    first = await scored(metric("contains", value="Paris", scope="any"), two)
    assert first.reason == "turn 1 of 2 passes: contains the reference"


async def test_a_long_conversations_reason_lists_ten_turns():
    turns = [turn(i, "q", "no") for i in range(1, 16)]
    verdict = await scored(metric("contains", value="yes", scope="all"), conversation(turns))
    assert verdict.reason == (
        "turns 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 5 more of 15 fail: reference not found"
    )


async def test_each_passes_when_the_share_of_passing_turns_reaches_the_threshold():
    half = metric("contains", value="Paris", scope="each", threshold=0.5)
    verdict = await scored(half, conversation())
    assert (verdict.score, verdict.passed) == (0.5, True)
    most = metric("contains", value="Paris", scope="each", threshold=0.75)
    assert not (await scored(most, conversation())).passed


async def test_a_graded_check_in_scope_all_and_any_scores_the_worst_and_the_best_turn():
    turns = [turn(1, "a", "colour"), turn(2, "b", "color"), turn(3, "c", "colr")]
    spec = metric("similarity", value="colour", scope="all")  # threshold 0.8
    lowest = await scored(spec, conversation(turns))
    assert lowest.score == pytest.approx(0.8)  # "colr", the lowest; every turn passes
    assert lowest.passed and lowest.reason.startswith("all 3 turns pass: ")
    best = await scored(metric("similarity", value="colour", scope="any"), conversation(turns))
    assert (best.score, best.passed) == (1.0, True)


async def test_a_negated_check_in_scope_holds_for_every_turn_or_one():
    """negate applies to each turn: `all` passes only when no turn says sorry."""
    negated = metric("contains", value="Sorry", scope="all", negate=True)
    verdict = await scored(negated, conversation())
    assert (verdict.passed, verdict.reason) == (False, "turn 3 of 4 fails: contains the reference")
    polite = conversation([turn(1, "hi", "Hello"), turn(2, "bye", "Goodbye")])
    assert (await scored(negated, polite)).passed


@pytest.mark.parametrize("scope", SCOPES)
async def test_a_single_answer_is_checked_as_today_whatever_the_scope(scope):
    single = Observation(output="It is Paris.", input="Capital of France?")
    verdict = await scored(metric("contains", value="Paris", scope=scope), single)
    assert (verdict.score, verdict.passed, verdict.reason) == (1.0, True, "contains the reference")
    failing = Observation(output="It is Lyon.", input="Capital of France?")
    assert (await scored(metric("contains", value="Paris", scope=scope), failing)).score == 0.0


async def test_a_regex_with_its_pattern_flags_and_scope():
    parameters = {"pattern": r"^paris", "flags": ["i"], "scope": "each"}
    assert validate_parameters("regex", parameters) == parameters
    turns = [turn(1, "a", "Paris!"), turn(2, "b", "Lyon"), turn(3, "c", "PARIS"), turn(4, "d", "x")]
    verdict = await scored(metric("regex", **parameters), conversation(turns))
    assert (verdict.score, verdict.reason) == (0.5, "turns 2, 4 of 4 fail: pattern does not match")


async def test_each_turn_is_checked_with_its_own_tool_calls_latency_and_tokens():
    call = {"id": "c1", "name": "search", "arguments": {"q": "hotels"}}
    searched = await scored(metric("tool-call", name="search", scope="each"), conversation())
    missing = "found 0 of 1 expected calls; missing search; no tool calls"
    assert (searched.score, searched.reason) == (0.25, f"turns 1, 3, 4 of 4 fail: {missing}")
    assert (await scored(metric("tool-call", name="search", scope="any"), conversation())).passed
    timed = [
        turn(1, "a", "x", [call], latency_ms=100, input_tokens=5, output_tokens=5),
        turn(2, "b", "y", latency_ms=900, input_tokens=50, output_tokens=60),
    ]
    whole = conversation(timed, latency_ms=1000, tokens=120)
    fast = await scored(metric("max-latency", ms=500, scope="each"), whole)
    assert (fast.score, fast.reason) == (0.5, "turn 2 of 2 fails: 900 ms > 500.0")
    short = await scored(metric("max-tokens", tokens=100, scope="all"), whole)
    assert (short.passed, short.reason) == (False, "turn 2 of 2 fails: 110 > 100 tokens")
    assert (await scored(metric("max-latency", ms=500), whole)).reason == "1000 ms > 500.0"


async def test_an_error_on_one_turn_is_the_metrics_error_naming_the_turn():
    turns = [
        turn(1, "a", "x", input_tokens=1, output_tokens=1),
        turn(2, "b", "y"),  # no usage reported, and none for the conversation
        turn(3, "c", "z", input_tokens=1, output_tokens=1),
    ]
    verdict = await scored(metric("max-tokens", tokens=10, scope="each"), conversation(turns))
    assert verdict.error == "turn 2 of 3: the target reported no token usage"
    assert (verdict.score, verdict.passed) == (0.0, False)
    no_reference = await scored(metric("equals", scope="any"), conversation())
    assert no_reference.error is not None and no_reference.error.startswith("turn 1 of 4: ")


async def test_a_pattern_over_every_turn_has_one_budget_for_all_of_them():
    """Each turn's match takes about 0.3 s, within a pattern's 0.5 s: ten of them are the
    check's one second three times over, so the check errs, naming where it stopped."""
    turns = [turn(i, "q", "a," * 200) for i in range(1, 11)]
    started = time.monotonic()
    verdict = await scored(metric("regex", pattern="(.*,){6}x", scope="all"), conversation(turns))
    # Spent during a turn's match, or between two turns: either way, the check's second.
    assert verdict.error is not None and "1 s" in verdict.error, verdict.error
    assert verdict.error.startswith("turn ") and " of 10: " in verdict.error
    assert time.monotonic() - started < 2.5


def test_a_pattern_has_what_is_left_of_its_checks_budget():
    """The budget is the checking thread's CPU time, as a pattern's own timeout is: what else
    the machine runs meanwhile changes no verdict."""
    spec = metric("regex", pattern="^(a|a)*$")  # backtracks for ever on "aaaa...!"
    with one_budget():
        spent_until = time.thread_time() + 0.8
        while time.thread_time() < spent_until:  # the check's work before the pattern
            pass
        started = time.thread_time()
        with pytest.raises(ScoringError, match="took longer than the check's 1 s"):
            matches_regex(spec, Observation(output="a" * 40 + "!", input="q"))
    assert time.thread_time() - started < 0.4  # the 0.2 s left, not a pattern's 0.5 s


def test_a_checks_budget_is_not_spent_waiting():
    with one_budget():
        time.sleep(1.1)  # as a thread waiting for the interpreter, or for the machine
        assert seconds_left(0.5) == 0.5


async def test_a_check_over_many_long_turns_runs_off_the_loop():
    """Fifty answers of 400,000 characters of JSON: some 20 ms to read apiece, a second held
    on the event loop. (Numbers, which the collector does not track: a quarter of a million
    lists would measure its pauses, not the check's.)"""
    answer = json.dumps([1.5] * 79_999)
    turns = [turn(i, "q", answer) for i in range(1, 51)]
    checking = scored(metric("is-json", scope="each"), conversation(turns))
    _verdict, stall = await longest_stall(checking)
    assert stall < 0.5, stall


async def test_a_check_over_every_turn_stops_once_its_second_is_spent():
    """Fifty answers of a million characters of JSON: some 50 ms to read apiece."""
    answer = json.dumps([1.5] * 199_999)
    turns = [turn(i, "q", answer) for i in range(1, 51)]
    verdict = await scored(metric("is-json", scope="each"), conversation(turns))
    assert verdict.error is not None, verdict
    assert "of 50: not checked, the check took longer than 1 s" in verdict.error


async def test_a_check_over_a_few_short_turns_is_not_queued_behind_others():
    """Two cases' patterns hold both check threads for their half second each; a `contains`
    over three short turns is checked at once, not after them."""
    slow = metric("regex", pattern="^(a|a)*$")
    patterns = [
        asyncio.create_task(scored(slow, Observation(output="a" * 40 + "!", input="q")))
        for _ in range(2)
    ]
    await asyncio.sleep(0.05)  # both under way in the check threads
    started = time.monotonic()
    quick = await scored(metric("contains", value="Paris", scope="any"), conversation())
    waited = time.monotonic() - started
    await asyncio.gather(*patterns)
    assert quick.passed and waited < 0.3, waited


# --- where a scope may be given -----------------------------------------------------------------


@pytest.mark.parametrize("metric_type", [*CONVERSATION_JUDGES, "llm-rubric", "task-completion"])
def test_a_judge_takes_no_scope_naming_parameters_scope(metric_type):
    parameters = {"scope": "each", **({"criteria": "x"} if metric_type == "llm-rubric" else {})}
    with pytest.raises(ValidationError) as raised:
        validate_parameters(metric_type, parameters)
    (error,) = raised.value.errors()
    assert error["loc"] == ("parameters", "scope")
    assert f"{metric_type} is a judge" in error["msg"] and "takes no scope" in error["msg"]
    with pytest.raises(ScoringError, match=r"metadata\['k'\]\.scope: .* takes no scope"):
        given_parameters(metric_type, "k", parameters)


def test_a_bad_scope_and_a_bad_parameter_are_both_named():
    with pytest.raises(ValidationError) as raised:
        validate_parameters("regex", {"pattern": "(", "scope": "most"})
    assert {error["loc"] for error in raised.value.errors()} == {
        ("parameters", "pattern"),
        ("parameters", "scope"),
    }
    with pytest.raises(ValidationError) as judge_and_own:
        validate_parameters("refusal", {"scope": "each", "criteria": "x"})
    assert {error["loc"] for error in judge_and_own.value.errors()} == {
        ("parameters", "scope"),
        ("parameters", "criteria"),
    }


async def test_each_tests_parameters_take_the_metrics_scope_or_their_own():
    spec = metric("contains", from_test="assert:contains", scope="each")
    assert spec.parameters == {"from_test": "assert:contains", "scope": "each"}
    inherited = for_case(spec, {"assert:contains": {"value": "Paris"}})
    assert inherited is not None and inherited.parameters["scope"] == "each"
    assert (await scored(inherited, conversation())).score == 0.5
    own = for_case(spec, {"assert:contains": {"value": "Paris", "scope": "any", "threshold": 1}})
    assert own is not None and own.parameters == {
        "value": "Paris",
        "case_sensitive": True,
        "scope": "any",
    }
    assert (await scored(own, conversation())).passed
    unscoped = for_case(metric("contains", from_test="k"), {"k": {"value": "Paris"}})
    assert unscoped is not None and "scope" not in unscoped.parameters


def test_a_tests_bad_scope_is_an_error_naming_it():
    spec = metric("contains", from_test="k")
    with pytest.raises(ScoringError, match=r"metadata\['k'\]\.scope: Input should be"):
        for_case(spec, {"k": {"value": "x", "scope": "most"}})


async def test_each_under_a_threshold_that_is_no_share_needs_every_turn() -> None:
    """A "<=" metric (passing when the check scores at most 0) over four turns of which one
    scores 1: three of four turns pass, so the metric does not."""
    turns = [
        {"turn": i, "user": "q", "text": text, "tool_calls": []}
        for i, text in enumerate(["no", "yes", "no", "no"], 1)
    ]
    observation = Observation(output="no", input="q", turns=turns)
    spec = MetricSpec(
        name="never-yes",
        type="contains",
        parameters={"value": "yes", "scope": "each"},
        threshold=0.0,
        operator="<=",
    )
    verdict = await score(spec, observation, None)
    assert verdict.score == 0.75
    assert verdict.passed is False
