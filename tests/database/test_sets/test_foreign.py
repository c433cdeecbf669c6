"""Imports of foreign formats: promptfoo configs (with the files they refer to), OpenAI Evals
samples and Langfuse dataset items, as their documentation shows them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from database.test_sets import foreign_assertions, foreign_documents
from database.test_sets.foreign import (
    FOREIGN_FORMATS,
    Assertion,
    ForeignImport,
    Unmapped,
    parse_foreign,
)
from database.test_sets.foreign_documents import MAX_DOCUMENT_NESTING
from tests.database.test_sets.placement import where
from utils.errors import InvalidInput
from utils.problems import placed


def _files(attachments: dict[str, str | bytes]) -> dict[str, bytes]:
    """Keyword names as file names: cases__t_dot_csv is cases/t.csv."""
    return {
        name.replace("__", "/").replace("_dot_", "."): text.encode()
        if isinstance(text, str)
        else text
        for name, text in attachments.items()
    }


def promptfoo(config: str, **attachments: str | bytes) -> ForeignImport:
    return parse_foreign(config.encode(), "promptfoo", _files(attachments))


def refused(
    content: str | bytes, fmt: str = "promptfoo", **attachments: str | bytes
) -> InvalidInput:
    data = content.encode() if isinstance(content, str) else content
    files = _files(attachments)
    with pytest.raises(InvalidInput) as caught:
        parse_foreign(data, fmt, files)  # type: ignore[arg-type]
    assert caught.value.status == 422
    return caught.value


def located(exc: InvalidInput) -> list[tuple[Any, ...]]:
    """Each error's line, file and field. The errors of a parse that stops at once have no
    `field` where no one field is at fault: the import's route places them as the rest are."""
    return [(e["line"], e.get("file"), where(placed(e))[1]) for e in exc.errors or []]


def test_formats() -> None:
    assert FOREIGN_FORMATS == ("promptfoo", "openai-evals", "langfuse")
    assert "one of promptfoo" in refused("x", "csv").detail


# --- promptfoo: inline tests --------------------------------------------------------------------

CONFIG = """\
description: Capitals
prompts:
  - "Answer briefly: {{question}}"
  - file://prompts/chat.json
providers: [openai:gpt-4.1-mini]
defaultTest:
  vars:
    language: English
  metadata:
    suite: geo
  assert:
    - type: latency
      threshold: 3000
    - type: javascript
      value: output.length < 500
tests:
  - description: France
    vars:
      question: What is the capital of France?
      cities: [Paris, Lyon]
      profile: {country: France, population: [67, "million"]}
    metadata:
      difficulty: easy
    assert:
      - type: contains
        value: Paris
      - type: contains
        value: "{{ language }}"
      - type: not-icontains
        value: London
      - type: icontains-any
        value: "{{cities}}"
      - type: contains-all
        value: Paris, France
      - type: llm-rubric
        value: "Names {{question}} correctly, {{ unknown }} {% if x %}"
        threshold: 0.7
      - type: similar
        value: Paris is the capital
        threshold: 0.8
    options:
      provider: openai:gpt-4.1
  - vars:
      n: 42
      extra: text
    assert:
      - type: equals
        value: 42
        metric: exact
      - type: equals
        value: "{{n}}"
        metric: exact
      - type: is-json
      - type: regex
        value: ^\\d+$
  - vars:
      request: {city: Paris, days: 3}
    threshold: 0.5
    assert:
      - type: is-json
        value: {type: object, required: [city]}
      - type: cost
        threshold: 0.002
      - type: cost
      - type: context-faithfulness
      - type: answer-relevance
      - type: is-refusal
      - type: javascript
        value: output.includes('x')
"""


def test_promptfoo_inline_tests_vars_and_input() -> None:
    result = promptfoo(CONFIG)
    assert result.lines == [17, 43, 56]
    assert result.files == [None, None, None]
    france, number, request = result.cases
    assert france.input == "What is the capital of France?"
    assert france.variables == {
        "language": "English",  # defaultTest's vars under the test's
        "question": "What is the capital of France?",
        "cities": ["Paris", "Lyon"],
        "profile": {"country": "France", "population": [67, "million"]},
    }
    # No input-like var: the test's own first var (before a default's), as JSON if not text.
    assert number.input == "42"
    assert number.variables == {"language": "English", "n": 42, "extra": "text"}
    assert request.input == '{"city": "Paris", "days": 3}'
    assert france.metadata["description"] == "France"
    assert france.metadata["difficulty"] == "easy"
    assert france.metadata["suite"] == "geo"
    assert number.metadata["suite"] == "geo"


def test_promptfoo_assertions_become_per_test_parameters() -> None:
    result = promptfoo(CONFIG)
    france, number, request = (case.metadata for case in result.cases)
    assert france["assert:contains"] == {"value": "Paris"}
    assert france["assert:contains-2"] == {"value": "English"}  # templated with the var
    assert france["assert:not-icontains"] == {"value": "London"}
    assert france["assert:icontains-any"] == {
        "values": ["Paris", "Lyon"],  # one reference to a list var: the list
        "case_sensitive": False,
    }
    assert france["assert:contains-all"] == {"values": ["Paris", "France"]}
    assert france["assert:llm-rubric"] == {
        "criteria": "Names What is the capital of France? correctly, {{ unknown }} {% if x %}",
        "threshold": 0.7,
    }
    assert france["assert:latency"] == {"ms": 3000}  # defaultTest's, after the test's own
    assert number["assert:exact"] == {"value": "42"}
    assert number["assert:exact-2"] == {"value": "42"}
    assert number["assert:is-json"] == {}
    assert number["assert:regex"] == {"pattern": "^\\d+$"}
    # is-json with a schema is a json-schema metric: "is-json" is taken by another type.
    assert request["assert:is-json-2"] == {"schema": {"type": "object", "required": ["city"]}}
    assert "assert:is-json" not in request
    assert request["assert:cost"] == {"usd": 0.002}
    assert request["assert:context-faithfulness"] == {}
    assert request["assert:answer-relevance"] == {}
    assert request["assert:is-refusal"] == {}
    assert list(request)[-1] == "assert:latency"  # defaultTest's assertions come last


def test_promptfoo_names_a_names_uses_in_a_test_in_turn_skipping_other_types() -> None:
    result = promptfoo(
        "tests:\n"
        "  - vars: {q: a}\n"
        "    assert: [{type: contains, value: x, metric: n}]\n"
        "  - vars: {q: b}\n"
        "    assert:\n"
        "      - {type: equals, value: e1, metric: n}\n"
        "      - {type: contains, value: c1, metric: n}\n"
        "      - {type: equals, value: e2, metric: n}\n"
        "      - {type: contains, value: c2, metric: n}\n"
    )
    assert [(a.name, a.type) for a in result.assertions] == [
        ("n", "contains"),
        ("n-2", "equals"),
        ("n-3", "equals"),
        ("n-4", "contains"),
    ]
    assert result.cases[1].metadata == {
        "assert:n-2": {"value": "e1"},
        "assert:n": {"value": "c1"},
        "assert:n-3": {"value": "e2"},
        "assert:n-4": {"value": "c2"},
    }


def test_promptfoo_assertion_list_names_types_and_negation() -> None:
    by_name = {a.name: a for a in promptfoo(CONFIG).assertions}
    assert by_name["contains"] == Assertion(
        "contains", "contains", False, "assert:contains", "contains"
    )
    assert by_name["contains-2"].type == "contains"
    assert by_name["not-icontains"] == Assertion(
        "not-icontains", "icontains", True, "assert:not-icontains", "not-icontains"
    )
    assert by_name["icontains-any"].type == "contains-any"
    assert by_name["exact"].type == by_name["exact-2"].type == "equals"
    assert by_name["latency"].type == "max-latency"
    assert by_name["cost"].type == "max-cost"
    assert by_name["context-faithfulness"].type == "faithfulness"
    assert by_name["is-refusal"].type == "refusal"
    assert by_name["is-json"].type == "is-json"
    # The same name with another type (is-json with a schema) takes the next free name.
    assert by_name["is-json-2"] == Assertion(
        "is-json-2", "json-schema", False, "assert:is-json-2", "is-json"
    )
    assert set(by_name) == {
        "contains",
        "contains-2",
        "not-icontains",
        "icontains-any",
        "contains-all",
        "llm-rubric",
        "latency",
        "exact",
        "exact-2",
        "is-json",
        "regex",
        "is-json-2",
        "cost",
        "context-faithfulness",
        "answer-relevance",
        "is-refusal",
    }


def test_promptfoo_unmapped_are_listed_with_counts_and_lines() -> None:
    result = promptfoo(CONFIG)
    assert result.unmapped == [
        Unmapped("javascript", 2, [14, 68], None, "no Assay equivalent"),  # defaultTest's once
        Unmapped("similar", 1, [38], None, "no Assay equivalent"),
        Unmapped("cost", 1, [64], None, "no threshold, so no limit to check"),
    ]


def test_promptfoo_notes_name_everything_not_imported() -> None:
    notes = promptfoo(CONFIG).notes
    assert "description: not imported (no Assay equivalent)" in notes
    assert (
        "prompts: 2 prompt(s) are not imported; create them as Assay prompts"
        " (`{{var}}` works the same)"
    ) in notes
    assert any(note.startswith("providers: 1 provider(s) are not imported") for note in notes)
    assert "options: set on 1 test(s); not imported (no Assay equivalent)" in notes
    assert "threshold: set on 1 test(s); not imported (no Assay equivalent)" in notes
    assert any(note.startswith("vars: 1 test(s) have a var holding a list") for note in notes)


def test_promptfoo_faithfulness_reads_the_context_var() -> None:
    result = promptfoo(
        "tests:\n"
        "  - vars: {query: 'Why?', context: Because it rains.}\n"
        "    assert: [{type: context-faithfulness, threshold: 0.9}]\n"
        "  - vars: {query: 'Who?', context: [Ada, Grace]}\n"
    )
    assert result.cases[0].context == ["Because it rains."]
    assert result.cases[0].metadata == {"assert:context-faithfulness": {"threshold": 0.9}}
    assert result.cases[1].context == []  # not asserted: the var stays a var only
    assert result.cases[1].variables["context"] == ["Ada", "Grace"]


def test_promptfoo_json_config() -> None:
    config = {
        "prompts": ["{{q}}"],
        "tests": [
            {"vars": {"q": "Hi"}, "assert": [{"type": "starts-with", "value": "Hello"}]},
            {"vars": {"q": {"nested": [1, 2]}}, "metadata": {"k": 1}},
        ],
    }
    result = promptfoo(json.dumps(config, indent="\t"))  # tabs: JSON, but not YAML
    assert [case.input for case in result.cases] == ["Hi", '{"nested": [1, 2]}']
    assert result.lines == [6, 17]
    assert result.cases[0].metadata == {"assert:starts-with": {"value": "Hello"}}


# --- promptfoo: files the config refers to --------------------------------------------------------

CSV = (
    "question,context,__expected,__expected1,__expected2,__description,__metadata:level,"
    "__metadata:tags[],__prefix\n"
    'What is 2+2?,math,4,contains: four,,sums,easy,"a, b",\n'
    '"A question\nover two lines",,icontains: Paris,not-contains: London,regex: ^P,,,,\n'
    ",,,,,,,,\n"
    "Capital?,,starts-with: The,contains-any: Paris,Lyon,,,,\n"
    "Hi,,is-json,grade: is polite,llm-rubric: is short,,,,Q:\n"
    "Bye,,javascript: output.length > 1,fn: output === 'x',python: file.py,,,,\n"
    "Why?,,similar(0.8): because,latency(500),cost,,,,\n"
)


def test_promptfoo_csv_file_expected_forms() -> None:
    result = promptfoo("tests: file://cases.csv", cases_dot_csv=CSV)
    assert result.lines == [2, 3, 6, 7, 8, 9]  # physical lines; a blank row is skipped
    assert result.files == ["cases.csv"] * 6
    sums, paris, capital, hi, bye, why = result.cases
    assert sums.input == "What is 2+2?"
    assert sums.variables == {"question": "What is 2+2?", "context": "math"}
    assert sums.metadata == {
        "level": "easy",
        "tags": ["a", "b"],
        "description": "sums",
        "assert:equals": {"value": "4"},  # no type prefix: equals
        "assert:contains": {"value": "four"},
    }
    assert paris.input == "A question\nover two lines"
    assert paris.variables == {"question": "A question\nover two lines", "context": ""}
    assert paris.metadata == {
        "assert:icontains": {"value": "Paris"},
        "assert:not-contains": {"value": "London"},
        "assert:regex": {"pattern": "^P"},
    }
    # An unquoted comma splits cells: "contains-any: Paris" and "Lyon" (a column without header
    # here would be an error, but __expected2 is that column).
    assert capital.metadata == {
        "assert:starts-with": {"value": "The"},
        "assert:contains-any": {"values": ["Paris"]},
        "assert:equals": {"value": "Lyon"},
    }
    assert hi.metadata == {
        "assert:is-json": {},
        "assert:llm-rubric": {"criteria": "is polite"},
        "assert:llm-rubric-2": {"criteria": "is short"},
    }
    assert bye.metadata == {}
    assert why.metadata == {"assert:latency": {"ms": 500.0}}
    assert result.unmapped == [
        Unmapped("javascript", 2, [8], "cases.csv", "no Assay equivalent"),
        Unmapped("python", 1, [8], "cases.csv", "no Assay equivalent"),
        Unmapped("similar", 1, [9], "cases.csv", "no Assay equivalent"),
        Unmapped("cost", 1, [9], "cases.csv", "no threshold, so no limit to check"),
    ]
    assert "__prefix: set on 1 test(s); not imported (no Assay equivalent)" in result.notes


def test_promptfoo_reference_paths_drop_file_scheme_and_dot_slash() -> None:
    csv = "input,__expected\nhello,contains: hi\n"
    result = promptfoo("tests: file://./cases/t.csv\n", cases__t_dot_csv=csv)
    assert result.files == ["cases/t.csv"]
    assert result.cases[0].metadata == {"assert:contains": {"value": "hi"}}
    bare = promptfoo("tests: tests.csv\n", tests_dot_csv=csv)
    assert bare.files == ["tests.csv"]


def test_promptfoo_missing_attachment_is_named() -> None:
    exc = refused("prompts: [x]\ntests: file://cases.csv\n")
    assert "'file://cases.csv'" in exc.detail
    assert "upload cases.csv alongside the config" in exc.detail
    assert "multipart part with that filename" in exc.detail
    assert located(exc) == [(2, None, "tests")]


@pytest.mark.parametrize(
    ("reference", "complaint"),
    [
        ("huggingface://datasets/rajpurkar/squad", "no other schemes"),
        ("https://example.com/tests.csv", "no other schemes"),
        ("file://tests/*.yaml", "globs are not read"),
        ("file://generate_tests.js", "made by a script"),
        ("file://generate.py:create_tests", "made by a script"),
        ("file://tests.xlsx", "not a file of tests Assay reads"),
    ],
)
def test_promptfoo_references_that_cannot_be_read(reference: str, complaint: str) -> None:
    exc = refused(f"tests:\n  - {reference}\n")
    assert complaint in exc.detail and reference in exc.detail
    assert located(exc) == [(2, None, "tests")]


def test_promptfoo_mixed_list_of_inline_tests_and_files() -> None:
    config = """\
defaultTest:
  assert:
    - type: icontains
      value: "{{answer}}"
tests:
  - vars: {question: "Inline?", answer: "yes"}
  - file://more.yaml
  - file://more.json
  - file://more.jsonl
  - vars: {question: "Last?", answer: "no"}
"""
    yaml_tests = "- vars:\n    question: From YAML\n    answer: y\n  description: yaml\n"
    json_tests = json.dumps(
        [
            {"vars": {"question": "From JSON", "answer": "j"}},
            {"vars": {"question": "J2", "answer": "k"}},
        ],
        indent=2,
    )
    jsonl_tests = '\n{"vars": {"question": "From JSONL", "answer": "l"}}\n'
    result = promptfoo(
        config, more_dot_yaml=yaml_tests, more_dot_json=json_tests, more_dot_jsonl=jsonl_tests
    )
    assert [case.input for case in result.cases] == [
        "Inline?",
        "From YAML",
        "From JSON",
        "J2",
        "From JSONL",
        "Last?",
    ]
    assert result.files == [None, "more.yaml", "more.json", "more.json", "more.jsonl", None]
    assert result.lines == [6, 1, 2, 8, 2, 10]
    assert result.cases[1].metadata == {"description": "yaml", "assert:icontains": {"value": "y"}}
    assert result.cases[4].metadata == {"assert:icontains": {"value": "l"}}


def test_promptfoo_unreferenced_attachment_is_noted() -> None:
    result = promptfoo("tests:\n  - vars: {q: x}\n", spare_dot_csv="q\ny\n")
    assert "spare.csv: uploaded, but the config does not refer to it; not read" in result.notes


# --- promptfoo: errors ----------------------------------------------------------------------------


def test_promptfoo_all_errors_are_reported_together_with_lines_and_files() -> None:
    config = """\
tests:
  - description: no vars
  - vars: {q: ok}
    assert:
      - type: contains
      - type: contains-any
        value: []
      - value: typeless
  - vars: {q: fine}
  - file://bad.csv
  - vars: [not, a, dict]
"""
    csv = "q,__expected\nfine,contains: x\n,contains: y\nok,regex:\n"
    exc = refused(config, bad_dot_csv=csv)
    assert located(exc) == [
        (2, None, "vars"),
        (5, None, "assert[0]"),
        (6, None, "assert[1]"),
        (8, None, "assert[2]"),
        (3, "bad.csv", "input"),
        (4, "bad.csv", "assert[0]"),
        (11, None, "vars"),
        (11, None, "vars"),
    ]
    assert exc.detail.startswith("8 invalid value(s) in the file; the first, at line 2:")
    messages = [e["message"] for e in exc.errors or []]
    assert messages[1] == "contains needs a value"
    assert messages[2] == "0 values; from 1 to 200"
    assert messages[3] == "an assertion must be an object with a type"
    assert messages[5] == "regex needs a value"


def test_promptfoo_error_in_an_attachment_names_it_first() -> None:
    exc = refused("tests: file://t.csv", t_dot_csv="q,__expected\n,contains: y\n")
    assert exc.detail.startswith("1 invalid value(s) in the file; the first, at t.csv line 2")
    assert exc.errors == [
        {
            "line": 2,
            "field": "t.csv line 2: input",
            "message": "Value error, a test needs input, messages or a conversation",
            "file": "t.csv",
        }
    ]


def test_promptfoo_yaml_syntax_error_has_its_line() -> None:
    exc = refused("prompts: [x]\ntests:\n  - vars: {q: 1}\n    assert: [\n  - vars: {q: 2}\n")
    assert exc.detail.startswith("Invalid YAML")
    assert located(exc) == [(5, None, None)]


def test_promptfoo_yaml_error_in_an_attachment_names_it() -> None:
    exc = refused("tests: [file://t.yaml]", t_dot_yaml="- vars: {q: 1\n- vars: x\n")
    assert exc.detail.startswith("t.yaml: Invalid YAML")
    assert exc.errors and exc.errors[0]["file"] == "t.yaml"


def test_promptfoo_yaml_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
    lines.append("tests: [{vars: {q: *i}}]")
    started = time.monotonic()
    exc = refused("\n".join(lines) + "\n")
    assert time.monotonic() - started < 1
    assert "expands (through aliases) to more than 1,000,000 values" in exc.detail
    assert located(exc) == [(6, None, None)]  # f: 1,111,111 values


def test_promptfoo_yaml_is_refused_while_it_is_read_once_it_holds_too_many_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading YAML costs about 40 µs a value: a file of more values than the bound is refused
    where it crosses it, not once the whole of it has been read."""
    monkeypatch.setattr(foreign_documents, "MAX_YAML_WRITTEN", 100)
    values = "".join(f"      - {i}\n" for i in range(10_000))  # one value a line, from line 4
    exc = refused(f"tests:\n  - vars:\n      x:\n{values}")
    assert "holds more than 100 values" in exc.detail
    # The document, "tests", its list, the case, "vars", its mapping, "x" and its list are values
    # 1 to 8: the 101st is x's 93rd item, on line 3 + 93.
    assert located(exc) == [(96, None, None)]
    assert promptfoo(f"tests:\n  - vars:\n      x:\n{values[: values.index('- 90')]}").cases


def test_promptfoo_yaml_files_of_one_upload_share_one_budget_of_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A config and its attachments are read on one budget: each on its own, a 10 MB upload
    of twenty attachments read for minutes before its refusal."""
    monkeypatch.setattr(foreign_documents, "MAX_YAML_WRITTEN", 100)
    attachment = "- vars: {x: [" + ", ".join(["1"] * 40) + "]}\n"  # some 45 values each
    config = "tests:\n" + "".join(f"  - file://t{k}.yaml\n" for k in range(3))
    files = {f"t{k}_dot_yaml": attachment for k in range(3)}
    exc = refused(config, **files)
    assert "holds more than 100 values" in exc.detail
    assert located(exc)[0][1] == "t2.yaml"  # the third file crosses the line
    assert len(promptfoo(config.replace("  - file://t2.yaml\n", ""), **files).cases) == 2


def test_promptfoo_regular_expressions_of_one_upload_share_one_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A defaultTest regex is rendered with each test's vars, a pattern of its own each time:
    a 100 KB upload compiled for minutes. The distinct patterns share MAX_PATTERN_CHARS."""
    monkeypatch.setattr(foreign_assertions, "MAX_PATTERN_CHARS", 10_000)
    body = "[a-z]" * 100  # 500 characters
    asserts = "".join(f"    - {{type: regex, value: '{{{{v}}}}-{k}{body}'}}\n" for k in range(5))
    config = f"defaultTest:\n  assert:\n{asserts}tests: file://t.csv\n"
    exc = refused(config, t_dot_csv="v\n" + "".join(f"{i}\n" for i in range(10)))
    assert (
        "regular expressions hold more than 10,000 characters" in (exc.errors or [])[0]["message"]
    )
    # The same patterns again cost nothing more: ten tests of one set of vars import.
    same = promptfoo(config, t_dot_csv="v\n" + "x\n" * 10)
    assert len(same.cases) == 10


def test_promptfoo_text_that_grows_on_expansion_is_refused_before_it_is_built() -> None:
    """A small file can describe far more than it holds: a long var filled into a value many
    times, long text behind many aliases, defaults repeated in every test."""
    big = "x" * 100_000
    filled = refused(
        f"tests:\n  - vars: {{a: {big}}}\n    assert:\n      - type: contains\n"
        f"        value: '{'{{a}}' * 2000}'\n"
    )
    assert "over 10,000 characters once its vars are filled in" in filled.detail
    aliased = refused(f"x: &s {big}\ntests:\n" + "  - vars: {a: *s}\n" * 1000)
    assert "expands (through aliases) to more than 32,000,000 characters" in aliased.detail
    defaults = refused(
        f"defaultTest:\n  vars: {{b: {'y' * 200_000}}}\ntests:\n"
        + "".join(f"  - vars: {{a: '{i}'}}\n" for i in range(5000))
    )
    assert "bytes of JSON once defaults and aliases are filled in" in defaults.detail


def test_promptfoo_yaml_recursive_alias_and_deep_nesting_are_refused() -> None:
    assert "levels deep" in refused("a: &a [*a]\ntests: []\n").detail
    deep = refused("tests: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"more than {MAX_DOCUMENT_NESTING} levels deep" in deep.detail
    nested = "x: &x " + "[" * 20 + "]" * 20 + "\ny: " + "[" * 20 + "*x" + "]" * 20 + "\n"
    assert "nests (through aliases)" in refused(nested + "tests: []\n").detail


def test_promptfoo_yaml_numbers_are_read_as_the_database_keeps_them() -> None:
    """As JSON's (import_bounds.stored_number): a file synced again equals what it stored."""
    result = promptfoo("tests:\n  - vars: {q: x, big: 1.0e+16, zero: -0.0, whole: 1500.0}\n")
    assert result.cases[0].variables == {"q": "x", "big": 10**16, "zero": 0.0, "whole": 1500.0}
    assert type(result.cases[0].variables["big"]) is int
    for constant in (".inf", "-.inf", ".nan"):
        assert (
            f"{constant} is not a JSON number"
            in refused(f"tests: [{{vars: {{q: {constant}}}}}]").detail
        )


def test_promptfoo_yaml_values_stay_json() -> None:
    result = promptfoo("tests:\n  - vars: {when: 2024-05-01, 1: one, null: z, 2.5: f}\n")
    assert result.cases[0].variables == {"when": "2024-05-01", "1": "one", "null": "z", "2.5": "f"}
    assert result.cases[0].input == "2024-05-01"
    unsafe = refused("tests:\n  - !!python/object/apply:os.system [echo hi]\n")
    assert "could not determine a constructor" in unsafe.detail
    assert located(unsafe) == [(2, None, None)]


def test_promptfoo_unmapped_lines_are_capped_but_counted() -> None:
    test = "  - vars: {{q: '{}'}}\n    assert: [{{type: webhook, value: u}}]\n"
    tests = "".join(test.format(n) for n in range(25))
    result = promptfoo("tests:\n" + tests)
    [unmapped] = result.unmapped
    assert (unmapped.type, unmapped.count, unmapped.file) == ("webhook", 25, None)
    assert unmapped.lines == [3 + 2 * n for n in range(20)]


def test_promptfoo_specific_unmapped_reasons() -> None:
    result = promptfoo(
        "tests:\n"
        "  - vars: {q: x}\n"
        "    assert:\n"
        "      - {type: contains, value: x, transform: output.toLowerCase()}\n"
        "      - {type: llm-rubric, value: 'file://rubric.txt'}\n"
        "      - {type: regex, value: 'a(b'}\n"
        "      - {type: assert-set, assert: [{type: contains, value: x}]}\n"
        "      - {type: not-similar, value: y}\n"
        "      - {type: contains, value: y, weight: 2}\n"
        "      - {type: regex, value: '(?:a{1000}){1000}'}\n"
    )
    reasons = {(u.type, u.lines[0]): u.reason for u in result.unmapped}
    assert reasons[("contains", 4)] == "it transforms the output first, which Assay does not"
    assert reasons[("llm-rubric", 5)].startswith("its value is a file reference")
    assert reasons[("regex", 6)].startswith("the pattern is not a regular expression")
    assert reasons[("assert-set", 7)] == "assertion sets (grouped assertions) are not imported"
    assert reasons[("not-similar", 8)] == "no Assay equivalent"
    assert "make 1,000,000 copies of its parts" in reasons[("regex", 10)]
    assert result.cases[0].metadata == {"assert:contains": {"value": "y"}}
    assert (
        "assert.weight: set on 1 assertion(s); not imported (no Assay equivalent)" in result.notes
    )


def test_promptfoo_bad_json_schema_is_an_error() -> None:
    exc = refused(
        "tests:\n  - vars: {q: x}\n    assert:\n      - {type: is-json, value: {type: 5}}\n"
    )
    assert located(exc) == [(4, None, "assert[0]")]
    assert (exc.errors or [])[0]["message"].startswith("not a valid JSON schema")


def test_promptfoo_bounds() -> None:
    tests = "tests:\n" + "".join(f"  - vars: {{q: '{n}'}}\n" for n in range(4))
    assert len(parse_foreign(tests.encode(), "promptfoo", max_cases=4).cases) == 4
    with pytest.raises(InvalidInput) as caught:
        parse_foreign(tests.encode(), "promptfoo", max_cases=3)
    assert caught.value.detail == "Too many test cases: at most 3 per import"
    assert refused("prompts: [x]\n").detail == "The file contains no test cases"
    assert "not UTF-8" in refused(b"tests: \xff\n").detail
    exc = refused("tests: file://t.csv", t_dot_csv=b"q\n\xff")
    assert exc.detail.startswith("t.csv: The file is not UTF-8 text")


# --- OpenAI Evals ---------------------------------------------------------------------------------

SAMPLES = [
    {
        "input": [
            {"role": "system", "content": "Answer with a number."},
            {"role": "system", "name": "example_user", "content": "1+1?"},
            {"role": "user", "content": "2+2?"},
        ],
        "ideal": ["4", "four", 4],
    },
    {"input": "Q: What is the capital of France?\nA:", "ideal": "Paris", "source": "wiki"},
    {"input": [{"role": "user", "content": "Say hi"}], "ideal": 7, "meta": {"k": [1]}},
    {"input": "No ideal"},
]


def _jsonl(items: list[Any], blank: bool = True) -> bytes:
    return ("\n\n" if blank else "\n").join(json.dumps(item) for item in items).encode()


def test_openai_evals_messages_and_string_input() -> None:
    result = parse_foreign(_jsonl(SAMPLES), "openai-evals")
    chat, completion, number, bare = result.cases
    assert result.lines == [1, 3, 5, 7]  # blank lines skipped, still counted
    assert result.files == [None] * 4
    assert [m.model_dump() for m in chat.messages or []] == [
        {"role": "system", "content": "Answer with a number."},
        {"role": "system", "content": "1+1?"},
        {"role": "user", "content": "2+2?"},
    ]
    assert chat.input is None
    assert chat.expected_output == "4"
    assert chat.metadata == {
        "ideal": ["4", "four", "4"],
        "assert:ideal": {"values": ["4", "four", "4"]},
    }
    assert completion.input == "Q: What is the capital of France?\nA:"
    assert completion.expected_output == "Paris"
    assert completion.metadata == {"source": "wiki", "assert:ideal": {"values": ["Paris"]}}
    assert number.expected_output == "7"
    assert number.metadata == {"meta": {"k": [1]}, "assert:ideal": {"values": ["7"]}}
    assert bare.expected_output is None and bare.metadata == {}
    assert result.assertions == [Assertion("ideal", "contains-any", False, "assert:ideal", "ideal")]
    assert result.unmapped == []
    assert any("Match, Includes, FuzzyMatch" in note for note in result.notes)
    assert "input[].name: in 1 message(s); not imported" in result.notes


def test_openai_evals_errors_are_reported_together() -> None:
    lines = [
        json.dumps({"input": [{"role": "robot", "content": "hi"}], "ideal": "x"}),
        json.dumps({"input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        "",
        json.dumps({"ideal": "x"}),
        json.dumps({"input": "ok", "ideal": []}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"input": "ok", "ideal": "fine"}),
    ]
    exc = refused("\n".join(lines), "openai-evals")
    assert located(exc) == [
        (1, None, "input[0].role"),
        (2, None, "input[0].content"),
        (4, None, "input"),
        (5, None, "ideal"),
        (6, None, None),
        (7, None, None),
    ]
    assert exc.detail.startswith(
        "6 invalid value(s) in the file; the first, at line 1: unknown role 'robot'"
    )


def test_openai_evals_no_samples() -> None:
    assert refused("\n\n", "openai-evals").detail == "The file contains no test cases"


# --- Langfuse ------------------------------------------------------------------------------------

ITEMS = [
    {
        "id": "item-1",
        "datasetId": "ds-1",
        "input": "What is the capital of France?",
        "expectedOutput": "Paris",
        "metadata": {"topic": "geo"},
        "sourceTraceId": "trace-1",
        "sourceObservationId": "obs-1",
        "status": "ACTIVE",
        "createdAt": "2024-05-01T00:00:00Z",
    },
    {
        "id": "item-2",
        "input": {"question": "2+2?", "context": ["math"]},
        "expected_output": {"answer": 4},
        "metadata": "from a trace",
        "source_trace_id": "trace-2",
    },
    {"id": "item-3", "input": "old", "status": "ARCHIVED"},
    {"id": "item-4", "input": [{"role": "user", "content": "Hi"}], "expectedOutput": None},
    {"id": "item-5", "input": {"a": 1}},
    {"id": "item-6", "input": 42, "expectedOutput": True},
]


def _starts(text: str) -> list[int]:
    """The line of the "{" that opens each kept item: the line before its "id"."""
    lines = text.split("\n")
    kept = ["item-1", "item-2", "item-4", "item-5", "item-6"]
    return [next(n for n, line in enumerate(lines) if f'"id": "{i}"' in line) for i in kept]


def _check_items(result: ForeignImport) -> None:
    first, second, chat, obj, number = result.cases
    assert first.input == "What is the capital of France?"
    assert first.expected_output == "Paris"
    assert first.metadata == {
        "topic": "geo",
        "langfuse_id": "item-1",
        "langfuse_trace_id": "trace-1",
        "langfuse_observation_id": "obs-1",
    }
    assert second.input == "2+2?"
    assert second.variables == {"question": "2+2?", "context": ["math"]}
    assert second.expected_output == '{"answer": 4}'
    assert second.metadata == {
        "value": "from a trace",
        "langfuse_id": "item-2",
        "langfuse_trace_id": "trace-2",
    }
    assert [m.model_dump() for m in chat.messages or []] == [{"role": "user", "content": "Hi"}]
    assert chat.expected_output is None
    assert obj.input == '{"a": 1}' and obj.variables == {"a": 1}
    assert number.input == "42" and number.expected_output == "true"
    assert result.files == [None] * 5
    assert result.assertions == [] and result.unmapped == []
    assert result.notes == [
        "status: 1 archived item(s) skipped",
        "datasetId: in 1 item(s); not imported",
        "createdAt: in 1 item(s); not imported",
    ]


def test_langfuse_api_page() -> None:
    page = {"data": ITEMS, "meta": {"page": 1, "limit": 50, "totalItems": 6}}
    text = json.dumps(page, indent=2)
    result = parse_foreign(text.encode(), "langfuse")
    _check_items(result)
    assert result.lines == _starts(text)
    assert result.lines[0] == 3


def test_langfuse_items_wrapper_after_another_key() -> None:
    page = {"meta": {"page": 1}, "items": ITEMS}
    text = json.dumps(page, indent=1)
    result = parse_foreign(text.encode(), "langfuse")
    _check_items(result)
    assert result.lines == _starts(text)
    assert result.lines[0] == 6


def test_langfuse_array_and_jsonl() -> None:
    text = json.dumps(ITEMS, indent=2)
    array = parse_foreign(text.encode(), "langfuse")
    _check_items(array)
    assert array.lines == _starts(text)
    assert array.lines[:2] == [2, 15]
    jsonl = parse_foreign(_jsonl(ITEMS, blank=False), "langfuse")
    _check_items(jsonl)
    assert jsonl.lines == [1, 2, 4, 5, 6]
    single = parse_foreign(json.dumps({"data": ITEMS}).encode(), "langfuse")
    assert single.lines == [1] * 5


def test_langfuse_errors() -> None:
    bad = [{"input": None, "id": "x"}, {"input": [{"role": "robot", "content": "x"}]}]
    exc = refused(_jsonl([*bad, "text"], blank=False), "langfuse")
    assert located(exc) == [(1, None, "input"), (2, None, "messages.0.role"), (3, None, None)]
    assert "Invalid JSON at line 2" in refused('[{"input": "x"},\n oops]', "langfuse").detail
    assert refused("[]", "langfuse").detail == "The file contains no test cases"
    archived = json.dumps([{"input": "x", "status": "ARCHIVED"}])
    assert refused(archived, "langfuse").detail == "The file contains no test cases"


@pytest.mark.parametrize(
    ("content", "fmt", "line"),
    [
        (b'tests:\n  - vars: {q: "\\ud800"}\n', "promptfoo", 2),
        (b'{"tests": [{"vars": {"q": "\\udc00x"}}]}', "promptfoo", 1),
        (b'{"input": "\\ud800", "ideal": "x"}\n', "openai-evals", 1),
        (b'[{"input": "\\ud800"}]', "langfuse", 1),
    ],
)
def test_a_lone_surrogate_is_refused_naming_its_line(content: bytes, fmt: str, line: int) -> None:
    """Valid JSON and YAML escapes, but no UTF-8: measuring the case raised (a 500)."""
    assert (line, None, "input") in located(refused(content, fmt))
