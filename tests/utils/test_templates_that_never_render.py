"""A template that would fail every render is refused when saved, naming its field and line: a
tag loading another template (a prompt has none to load), or a filter or test the sandbox lacks,
even where jinja itself would find it missing only as it renders (within an `if`). The refusal
is the save's: a template stored before renders as it did, where that branch is not taken."""

from __future__ import annotations

import pytest

from utils.errors import InvalidInput
from utils.templates import check_template, render

NEVER_RENDERS = {
    "include": ("{% include 'a' %}", "`include` is not available"),
    "extends": ("{% extends 'a' %}", "`extends` is not available"),
    "import": ("{% import 'a' as m %}", "`import` is not available"),
    "from import": ("{% from 'a' import b %}", "`from ... import` is not available"),
    "unknown filter in an if": ("{% if x %}{{ x|nosuch }}{% endif %}", "No filter named 'nosuch'"),
    "removed filter in an if": ("{% if x %}{{ x|pprint }}{% endif %}", "No filter named 'pprint'"),
    "unknown test in an if": ("{% if x %}{{ x is nosuch }}{% endif %}", "No test named 'nosuch'"),
    "unknown filter block": (
        "{% if x %}{% filter nosuch %}y{% endfilter %}{% endif %}",
        "No filter named 'nosuch'",
    ),
}


@pytest.mark.parametrize("field", ["template", "system_prompt"])
@pytest.mark.parametrize(("tag", "said"), NEVER_RENDERS.values(), ids=NEVER_RENDERS.keys())
def test_a_template_that_never_renders_is_refused_naming_field_and_line(
    field: str, tag: str, said: str
) -> None:
    source = "Hello {{ x }}\n" + tag
    with pytest.raises(InvalidInput) as refused:
        check_template(source, field=field)
    assert refused.value.status == 422
    assert refused.value.detail.startswith("template does not compile (line 2): ")
    assert said in refused.value.detail
    [error] = refused.value.errors or []
    assert (error["field"], error["line"]) == (field, 2)
    assert said in error["message"]


def test_filters_and_tests_the_sandbox_offers_still_pass() -> None:
    source = "{% if x is defined and x is string %}{{ x|upper|trim }}{% endif %}"
    assert check_template(source, field="template") == {"x"}
    assert render(source, {"x": " hi "}) == "HI"


# Saved before such templates were refused: what never renders sits in a branch not taken.
STORED = {
    "unknown filter": "{% if flag %}{{ x|pprint }}{% endif %}ok",
    "unknown test": "{% if flag %}{{ x is nosuch }}{% endif %}ok",
    "include": "{% if flag %}{% include 'a' %}{% endif %}ok",
}


@pytest.mark.parametrize("source", STORED.values(), ids=STORED.keys())
def test_a_stored_template_renders_where_its_branch_that_never_renders_is_not_taken(
    source: str,
) -> None:
    assert render(source, {"flag": False, "x": 1}) == "ok"
    with pytest.raises(InvalidInput):  # its save is refused, and does not change the render
        check_template(source, field="template")
    assert render(source, {"flag": False, "x": 1}) == "ok"
    with pytest.raises(InvalidInput) as failed:  # taken, it fails as it did
        render(source, {"flag": True, "x": 1})
    assert failed.value.detail.startswith("template failed to render: ")
