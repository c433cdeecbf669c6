"""promptfoo YAML read as promptfoo reads it (js-yaml 4: YAML 1.2's core schema), mapping keys
that would collide refused, and an import's notes on keys it leaves out kept to a bound."""

from __future__ import annotations

import json

import pytest

from database.test_sets.foreign import parse_foreign
from database.test_sets.import_bounds import MAX_KEY_NOTES
from utils.errors import InvalidInput


def _promptfoo(config: str) -> list[dict]:
    result = parse_foreign(config.encode(), "promptfoo")
    return [case.model_dump(mode="json") for case in result.cases]


def _refused(config: str, fmt: str = "promptfoo") -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_foreign(config.encode(), fmt)  # type: ignore[arg-type]
    return caught.value


def test_yaml_1_1_words_and_numbers_are_what_promptfoo_reads() -> None:
    [case] = _promptfoo(
        "tests:\n  - vars: {country: NO, answer: yes, time: 12:30, mode: 0755, big: 1_000,"
        " flag: off, on: y}\n"
    )
    assert case["input"] == "NO"
    assert case["variables"] == {
        "country": "NO",
        "answer": "yes",
        "time": "12:30",
        "mode": 755,
        "big": "1_000",
        "flag": "off",
        "on": "y",
    }


def test_yaml_1_2_numbers_booleans_and_nulls() -> None:
    [case] = _promptfoo(
        "tests:\n  - vars: {q: x, n: 1e3, o: 0o755, h: 0x1F, b: 0b101, t: True, f: FALSE,"
        " z: ~, nil: Null, e: , half: .5, dot: 1., neg: -.5}\n"
    )
    variables = case["variables"]
    assert variables == {
        "q": "x",
        "n": 1000.0,
        "o": 493,
        "h": 31,
        "b": 5,
        "t": True,
        "f": False,
        "z": None,
        "nil": None,
        "e": None,
        "half": 0.5,
        "dot": 1.0,
        "neg": "-.5",  # js-yaml's pattern gives a sign to no float without digits first
    }
    assert isinstance(variables["n"], float)


def test_an_assertion_reads_yes_as_text_and_5e3_as_a_number() -> None:
    config = (
        "tests:\n  - vars: {q: x}\n    assert:\n      - {type: equals, value: yes}\n"
        "      - {type: llm-rubric, value: ok, threshold: 5e3}\n"
    )
    [case] = _promptfoo(config)
    assert case["metadata"]["assert:equals"] == {"value": "yes"}
    assert case["metadata"]["assert:llm-rubric"] == {"criteria": "ok", "threshold": 5000.0}


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ("{1: one, '1': uno}", "1"),
        ("{1: one, 1.0: two}", "1"),
        ("{true: a, 'true': b}", "true"),
        ("{q: a, q: b}", "q"),
    ],
)
def test_a_key_written_twice_in_a_mapping_is_a_422_naming_its_line(mapping, key) -> None:
    refused = _refused(f"tests:\n  - vars: {{input: x}}\n  - vars: {mapping}\n")
    assert refused.status == 422
    [error] = refused.errors or []
    assert error["line"] == 3
    assert f"the key {key!r} appears twice in one mapping" in error["message"]


def test_keys_python_equates_but_javascript_does_not_are_both_kept() -> None:
    [case] = _promptfoo("tests:\n  - vars: {1: one, true: yes, 2.5: f}\n")
    assert case["variables"] == {"1": "one", "true": "yes", "2.5": "f"}


def test_a_merged_key_may_be_overridden_without_being_refused() -> None:
    config = (
        "inner: {y: &mid {<<: &base {a: 1, b: 1}, a: 2}}\n"
        "tests:\n  - vars: {<<: *mid, b: 3}\n  - vars: {<<: [*base, {c: 4}], c: 5}\n"
    )
    first, second = _promptfoo(config)
    assert first["variables"] == {"a": 2, "b": 3}
    assert second["variables"] == {"a": 1, "b": 1, "c": 5}


def test_many_distinct_unknown_keys_give_a_bounded_number_of_notes() -> None:
    items = [{"input": f"q{n}", f"extra{n}": 1, "shared": 2} for n in range(MAX_KEY_NOTES * 3)]
    text = "\n".join(json.dumps(item) for item in items)
    notes = parse_foreign(text.encode(), "langfuse").notes
    assert len(notes) == MAX_KEY_NOTES + 1
    assert notes[0] == "extra0: in 1 item(s); not imported"
    assert "shared: in 300 item(s); not imported" in notes
    left = MAX_KEY_NOTES * 3 + 1 - MAX_KEY_NOTES  # the extra keys and "shared"
    assert notes[-1] == f"{left:,} more key(s) not imported are not listed"


def test_a_promptfoo_configs_notes_on_keys_are_bounded_and_the_others_kept() -> None:
    keys = "".join(f"key{n}: 1\n" for n in range(MAX_KEY_NOTES))
    tests = "".join(f"  - {{vars: {{q: a}}, extra{n}: 1}}\n" for n in range(MAX_KEY_NOTES))
    config = f"prompts: [p]\n{keys}tests:\n{tests}  - vars: {{q: file://x.txt}}\n"
    notes = parse_foreign(config.encode(), "promptfoo").notes
    assert notes[0].startswith("prompts: 1 prompt(s) are not imported")
    assert notes[1] == "key0: not imported (no Assay equivalent)"
    assert notes[MAX_KEY_NOTES + 1] == f"{MAX_KEY_NOTES:,} more key(s) not imported are not listed"
    assert notes[-1].startswith("vars: 1 value(s) are file references")
    assert len(notes) == MAX_KEY_NOTES + 3
