"""A variable the template sets itself where the rest of it sees it (at its top level, in a branch
of an `if` there) is not asked of the caller; one read where the template left it unset still
fails the render. A name set only in a scope of its own (a macro, a loop, a `with`), a loop's
target, or a `set` reading its own name is still the caller's to give."""

from __future__ import annotations

import pytest

from utils.errors import InvalidInput
from utils.templates import check_template, render

GREETING = (
    '{% if formal %}{% set greeting = "Dear" %}{% else %}{% set greeting = "Hi" %}{% endif %}'
    "{{ greeting }} {{ name }}"
)


def test_a_variable_set_in_branches_is_not_required() -> None:
    assert check_template(GREETING, field="template") == {"formal", "name"}
    assert render(GREETING, {"formal": True, "name": "Ann"}) == "Dear Ann"
    assert render(GREETING, {"formal": False, "name": "Ann"}) == "Hi Ann"


@pytest.mark.parametrize(
    ("source", "required"),
    [
        ("{% if a %}{% set b %}block{% endset %}{% endif %}{{ b }}", {"a"}),
        (
            "{% if a %}{% if c %}{% set b = 1 %}{% endif %}{% elif d %}{% set b = 2 %}{% endif %}"
            "{{ b }}",
            {"a", "c", "d"},
        ),
        ("{% if a %}{% macro m() %}x{% endmacro %}{% endif %}{{ m() }}", {"a"}),
    ],
)
def test_names_the_template_assigns_in_its_branches_are_not_required(
    source: str, required: set[str]
) -> None:
    assert check_template(source, field="template") == required


def test_a_variable_left_unset_still_fails_the_render() -> None:
    source = '{% if formal %}{% set greeting = "Dear" %}{% endif %}{{ greeting }}'
    with pytest.raises(InvalidInput) as refused:
        render(source, {"formal": False})
    assert "'greeting' is undefined" in refused.value.detail


SCOPED = {
    "set in a macro": (
        "{% macro sig() %}{% set name = 'Bot' %}{{ name }}{% endmacro %}Hello {{ name }}",
        {"name"},
    ),
    "set in a call block": (
        "{% macro m() %}{{ caller() }}{% endmacro %}"
        "{% call m() %}{% set name = 'Bot' %}{% endcall %}{{ name }}",
        {"name"},
    ),
    "a loop's target": (
        "{% for name in names %}{{ name }}{% endfor %}{{ name }}",
        {"names", "name"},
    ),
    "a loop's target in a branch": (
        "{% if a %}{% for b in a %}{% endfor %}{% endif %}{% if b %}{% endif %}",
        {"a", "b"},
    ),
    "set in a loop": ("{% for x in xs %}{% set name = x %}{% endfor %}{{ name }}", {"xs", "name"}),
    "set in a with": ("{% with %}{% set name = 'Bot' %}{% endwith %}{{ name }}", {"name"}),
    "a with's own": ("{% with name = 'Bot' %}{% endwith %}{{ name }}", {"name"}),
    "a set of itself": ("{% set topic = topic|title %}{{ topic }}", {"topic"}),
    "a swap": ("{% set a, b = b, a %}{{ a }}{{ b }}", {"a", "b"}),
}


@pytest.mark.parametrize(("source", "required"), SCOPED.values(), ids=SCOPED.keys())
def test_names_set_in_a_scope_of_their_own_or_from_themselves_are_required(
    source: str, required: set[str]
) -> None:
    assert check_template(source, field="template") == required


def test_a_name_a_macro_sets_for_itself_is_asked_of_the_caller_by_name() -> None:
    source = "{% macro sig() %}{% set name = 'Bot' %}{{ name }}{% endmacro %}Hello {{ name }}"
    with pytest.raises(InvalidInput) as refused:
        render(source, {})
    assert refused.value.errors == [
        {"field": "variables.name", "message": "is required by the template"}
    ]
    assert render(source, {"name": "Ann"}) == "Hello Ann"
