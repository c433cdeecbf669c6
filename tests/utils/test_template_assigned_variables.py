"""A variable the template sets itself (in a branch, a loop, a `with`, a macro) is not asked of
the caller; one read where the template left it unset still fails the render."""

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
        ("{% if a %}{% for b in a %}{% endfor %}{% endif %}{% if b %}{% endif %}", {"a"}),
        ("{% if a %}{% macro m() %}x{% endmacro %}{% endif %}{{ m() }}", {"a"}),
    ],
)
def test_names_the_template_assigns_anywhere_are_not_required(
    source: str, required: set[str]
) -> None:
    assert check_template(source, field="template") == required


def test_a_variable_left_unset_still_fails_the_render() -> None:
    source = '{% if formal %}{% set greeting = "Dear" %}{% endif %}{{ greeting }}'
    with pytest.raises(InvalidInput) as refused:
        render(source, {"formal": False})
    assert "'greeting' is undefined" in refused.value.detail
