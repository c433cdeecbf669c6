"""A judge's prompt is built with work bounded by what it shows, not by what it is given: a
tool call's arguments or a tool's result of megabytes is encoded only as far as the prompt
shows it, and of a long trajectory or conversation only the steps and turns shown, and of a
step only the lines shown, are rendered. What is shown is the JSON the value would have whole,
cut where it would be."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from database.evaluations import conversation_judges, judges
from database.evaluations.catalogue import judge_prompt
from database.evaluations.scoring import MetricSpec, Observation

HUGE = "x" * 15_000_000
JUDGES = ["task-completion", "tool-use-rationale", "goal-completion", "knowledge-retention"]
# What one prompt may encode: well under the input's megabytes, about what it shows.
ENCODED_BOUND = 2 * judges.TRAJECTORY_CHARS


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of each JSON text encoded while the test runs."""
    lengths: list[int] = []
    dumps = json.dumps

    def counted(value: Any, **options: Any) -> str:
        text = dumps(value, **options)
        lengths.append(len(text))
        return text

    monkeypatch.setattr(json, "dumps", counted)
    return lengths


def _prompt(metric_type: str, observation: Observation) -> str:
    return judge_prompt(MetricSpec("m", metric_type, {}, 0.5), observation)


@pytest.mark.parametrize("metric_type", JUDGES)
def test_a_15_mb_tool_call_is_encoded_only_as_far_as_the_prompt_shows_it(metric_type, encoded):
    call = {"id": "c1", "name": "search", "arguments": {"q": HUGE}}
    prompt = _prompt(metric_type, Observation(output="ok", input="Find it", tool_calls=[call]))
    assert 'search({"q": "xxx' in prompt and "xxx… [more characters]" in prompt
    assert sum(encoded) < ENCODED_BOUND


@pytest.mark.parametrize(
    "content",
    [{"rows": HUGE}, [{"id": row, "name": "row"} for row in range(300_000)]],
    ids=["one long string", "many small objects"],
)
@pytest.mark.parametrize("metric_type", ["task-completion", "tool-use-rationale"])
def test_a_15_mb_tool_result_is_encoded_only_as_far_as_the_prompt_shows_it(
    metric_type, content, encoded
):
    step = {"tool_results": [{"id": "c1", "name": "search", "content": content}]}
    prompt = _prompt(metric_type, Observation(output="ok", input="Find it", trajectory=[step]))
    assert "result of search [call c1]: " in prompt and "… [more characters]" in prompt
    assert sum(encoded) < ENCODED_BOUND


def test_a_step_of_many_calls_renders_only_the_calls_its_clip_shows(encoded):
    calls = [
        {"id": f"c{i}", "name": "write", "arguments": {"text": "y" * 1_400}} for i in range(128)
    ]
    prompt = _prompt("task-completion", Observation(output="ok", input="Write", tool_calls=calls))
    assert "[call c0]" in prompt and "[call c127]" not in prompt
    assert sum(encoded) < 2 * judges.STEP_CHARS


def test_a_turn_of_many_calls_renders_only_the_calls_its_clip_shows(encoded):
    calls = [
        {"id": f"c{i}", "name": "write", "arguments": {"text": "y" * 1_400}} for i in range(128)
    ]
    turns = [{"turn": 1, "user": "Write", "text": "Done.", "tool_calls": calls}]
    prompt = _prompt("goal-completion", Observation(output="", input="Write", turns=turns))
    assert prompt.count("assistant calls write(") < 10
    assert sum(encoded) < 2 * conversation_judges.TURN_CHARS


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """The numbers of the parts `module.name(number, part)` renders."""
    numbers: list[int] = []
    render = getattr(module, name)

    def counted(number: int, part: dict[str, Any]) -> str:
        numbers.append(number)
        return render(number, part)

    monkeypatch.setattr(module, name, counted)
    return numbers


def test_of_a_long_trajectory_only_the_first_and_last_steps_shown_are_rendered(monkeypatch):
    rendered = _counting(monkeypatch, judges, "_step")
    steps = [{"text": f"step {i} " + "z" * 1_000} for i in range(1, 2_001)]
    prompt = _prompt("task-completion", Observation(output="ok", input="Go", trajectory=steps))
    shown = prompt.count("\nStep ")
    assert "Step 1:" in prompt and "Step 2000:" in prompt and "steps left out" in prompt
    assert len(rendered) <= shown + 2  # and the one from each end that did not fit
    assert 1_000 not in rendered


def test_of_a_long_conversation_only_the_first_and_last_turns_shown_are_rendered(monkeypatch):
    rendered = _counting(monkeypatch, conversation_judges, "_turn")
    turns = [{"turn": i, "user": f"question {i}", "text": "z" * 1_000} for i in range(1, 2_001)]
    prompt = _prompt("turn-relevance", Observation(output="", input="", turns=turns))
    shown = prompt.count("Turn ")
    assert (
        "Turn 1:" in prompt and "Turn 2000:" in prompt and "The conversation, 2000 turns" in prompt
    )
    assert len(rendered) <= shown + 2
    assert 1_000 not in rendered


VALUES = [
    {"q": "hotels in Paris", "n": 3, "ok": True, "none": None, "ratio": 0.25},
    {"nested": [{"a": [1, 2, {"b": 'é"\\\n\u2028'}]}, [], {}], "big": float("nan")},
    [1.5, -2, False, "tab\there", {"x": "y" * 40}, (1, 2)],
    {1: "int key", 2.5: "float key", False: "bool key", None: "null key"},
    {"when": datetime.date(2026, 1, 2), "inf": float("inf"), "ü": "\x00\x1f"},
]


@pytest.mark.parametrize("value", VALUES)
def test_a_value_is_shown_as_its_whole_json_cut_where_that_would_be(value):
    whole = json.dumps(value, ensure_ascii=False, default=str)
    for limit in range(len(whole) + 2):
        expected = whole if len(whole) <= limit else f"{whole[:limit]}… [more characters]"
        assert judges.shown(value, limit) == expected.translate(judges.LINE_BREAKS)
