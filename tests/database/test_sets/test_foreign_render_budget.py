"""The rendering of promptfoo assertion values is bounded per upload: defaultTest's vars and
assertions apply to every test, so what the file holds once is rendered once per test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from database.test_sets import foreign_templates
from database.test_sets.foreign import parse_foreign
from utils.errors import InvalidInput


def _refused(config: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_foreign(config.encode(), "promptfoo", {})
    return caught.value


def _tests(count: int) -> str:
    return "tests:\n" + "".join(f"  - vars: {{q: 'question {i}'}}\n" for i in range(count))


def test_a_default_var_that_is_not_text_is_serialised_once_per_upload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1 MB mapping in defaultTest.vars filled into a defaultTest assertion was serialised
    anew for every test (a minute of an import thread for 10,000 tests, each refused)."""
    keys = "".join(f"      k{j}: {'w' * 1000}\n" for j in range(30))  # 30 KB of JSON
    config = (
        f"defaultTest:\n  vars:\n    big:\n{keys}"
        "  assert:\n    - {type: contains, value: '{{big}}'}\n" + _tests(500)
    )
    serialised: list[int] = []
    dumps = json.dumps

    def counted(value: Any, **options: Any) -> str:
        dumped = dumps(value, **options)
        serialised.append(len(dumped))
        return dumped

    monkeypatch.setattr(json, "dumps", counted)
    exc = _refused(config)
    monkeypatch.undo()
    assert "over 10,000 characters once its vars are filled in" in exc.detail
    big = [size for size in serialised if size > 10_000]
    assert len(big) == 1, f"the default var was serialised {len(big)} times"


def test_a_default_var_is_serialised_once_for_every_test_that_passes_too() -> None:
    config = (
        "defaultTest:\n  vars:\n    shape: {kind: answer, words: [a, b]}\n"
        "  assert:\n    - {type: icontains, value: 'shape {{shape}} for {{q}}'}\n" + _tests(3)
    )
    cases = parse_foreign(config.encode(), "promptfoo", {}).cases
    expected = 'shape {"kind": "answer", "words": ["a", "b"]} for question 2'
    assert cases[2].metadata["assert:icontains"] == {"value": expected}


@pytest.mark.parametrize("length", [9_000, 20_000], ids=["rendered", "refused"])
def test_an_uploads_renders_share_one_budget_refused_ones_included(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    """Refused renders were free: no bound on the cases' size counted them. Each render is
    charged, and past the budget the whole upload is refused at the test that crossed it."""
    monkeypatch.setattr(foreign_templates, "MAX_RENDERED_CHARS", 100_000)
    config = (
        f"defaultTest:\n  assert:\n    - {{type: contains, value: '{'x' * length}'}}\n" + _tests(50)
    )
    exc = _refused(config)
    assert "more than 100,000 characters once rendered" in exc.detail
    [found] = exc.errors or []
    assert found["field"] == "defaultTest.assert[0]"
    per_test = 2 * length if length <= 10_000 else length  # read, and written when it fits
    assert found["line"] == 5 + 100_000 // per_test  # the first test is on line 5
