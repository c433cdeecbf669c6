"""Work that ran without its cost reaching the step budget: `str.format` reading its format
string and looking up its fields, and code that runs again and again outside a loop's or
macro's body (a block rendered through `self`, a loop's `if` filter, a macro's or call block's
default arguments). Each is refused once its cost passes a small budget, and templates using
them render as before."""

from __future__ import annotations

import pytest

from utils import template_budget as budget
from utils.config import get_settings
from utils.templates import TemplateTooCostly, render

STEPS = 3_000
Y = {"y": {"a": 1, "b": 1}}


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# `TIMES` repeats the work: 100 times is 4,000 steps or more charged, under 2,500 without the
# charge; 5 times renders within the budget.
FORMATS = {
    # a format string read again and again: its braces escaped, it prints half its length
    "format string": (
        "{% set f = '{{' * 2000 %}{% for i in range(TIMES // 2) %}{{ f.format()|length }}"
        "{% endfor %}",
        {},
    ),
    "fields": ("{{ ('{0}' * TIMES * 40).format('')|length }}", {}),
    "attributes of fields": (
        "{% set f = ('{0' ~ '.real' * 40 ~ '}') * TIMES %}{{ f.format(1)|length }}",
        {},
    ),
    "items of fields": (
        "{% set f = ('{0' ~ '[0]' * 40 ~ '}') * TIMES %}{{ f.format(x)|length }}",
        {"x": _nested(40)},
    ),
    "format_map": (
        "{% set f = ('{a' ~ '.real' * 40 ~ '}') * TIMES %}{{ f.format_map({'a': 1})|length }}",
        {},
    ),
}


@pytest.mark.parametrize(("template", "variables"), FORMATS.values(), ids=FORMATS.keys())
def test_a_format_is_charged_for_its_text_its_fields_and_their_lookups(
    settings, monkeypatch, template, variables
):
    monkeypatch.setattr(settings, "template_max_steps", STEPS)
    with pytest.raises(TemplateTooCostly, match="step budget"):
        render(template.replace("TIMES", "100"), variables)
    assert render(template.replace("TIMES", "5"), variables)


def test_formats_render_as_before():
    assert render("{{ '{0.real}-{1[0]}-{k}'.format(3, [4], k=5) }}", {}) == "3-4-5"
    assert render("{{ '{a[b]:>4}|{{}}'.format_map({'a': {'b': 'x'}}) }}", {}) == "   x|{}"
    assert render("{{ '{0:{1}}'.format('x', 3) }}|", {}) == "x  |"


def _chain(operator: str, times: int) -> str:
    return f" {operator} ".join(["y.b"] * times)


# 300 times: 5,000 steps or more charged, under 2,000 without the charge.
REPEATED = {
    # a block's body, rendered anew each time through `self`
    "block through self": "{% block a %}" + "{% set a = y.a %}" * 100 + "{% endblock %}"
    "{% for i in range(TIMES) %}{{ self.a() }}{% endfor %}",
    # a loop's `if` filter, run for every item though it keeps none
    "loop filter": "{% for i in range(TIMES) if not (" + _chain("<=", 100) + ") %}{% endfor %}",
    "recursive loop filter": "{% for x in [[[]] * TIMES] if (" + _chain("<=", 100) + ")"
    " recursive %}{{ loop(x) }}{% endfor %}",
    # a default argument, evaluated on every call that leaves it out
    "macro default": "{% macro m(a=(" + _chain("~", 200) + ")) %}{% endmacro %}"
    "{% for i in range(TIMES) %}{{ m() }}{% endfor %}",
    "call block default": "{% macro m() %}{% for i in range(TIMES) %}{{ caller() }}{% endfor %}"
    "{% endmacro %}{% call(a=(" + _chain("~", 200) + ")) m() %}{% endcall %}",
}


@pytest.mark.parametrize("template", REPEATED.values(), ids=REPEATED.keys())
def test_code_run_repeatedly_is_charged_for_its_size_each_time(settings, monkeypatch, template):
    monkeypatch.setattr(settings, "template_max_steps", STEPS)
    with pytest.raises(TemplateTooCostly, match="step budget"):
        render(template.replace("TIMES", "300"), Y)
    assert render(template.replace("TIMES", "10"), Y) == ""


def test_blocks_loop_filters_and_defaults_render_as_before():
    block = "{% block a %}<{{ y.a }}>{% endblock %}{{ self.a() }}"
    assert render(block, Y) == "<1><1>"
    kept = "{% for i in range(6) if i is odd %}{{ i }}{% endfor %}"
    assert render(kept, {}) == "135"
    charged = "{% for i in range(6) if (" + _chain("<=", 100) + ") and i is odd %}{{ i }}"
    assert render(charged + "{% endfor %}", Y) == "135"  # its charge leaves the test's value
    defaults = "{% macro m(a=y.a ~ 'x', b=" + _chain("+", 100) + ") %}{{ a }}{{ b }}{% endmacro %}"
    assert render(defaults + "{{ m() }} {{ m(2, 3) }}", Y) == "1x100 23"
    caller = "{% macro m() %}{{ caller() }}{{ caller(5) }}{% endmacro %}"
    assert render(caller + "{% call(a=y.a) m() %}[{{ a }}]{% endcall %}", Y) == "[1][5]"


def _steps_spent(monkeypatch, template: str) -> int:
    """The steps a render of `template` spends (its budget, as the render starts it, read after)."""
    started: list[budget.Budget] = []

    def start(spend: budget.Budget) -> object:
        started.append(spend)
        return starting(spend)

    starting = budget.start
    monkeypatch.setattr(budget, "start", start)
    assert render(template, Y) == ""
    monkeypatch.setattr(budget, "start", starting)
    [spend] = started
    return get_settings().template_max_steps - spend.steps


BODY = "{% if y.a > 1 %}{{ y.b }}{% endif %}" * 40


@pytest.mark.parametrize(
    "wrapped",
    [
        "{% for i in range(1000) %}{% block a %}BODY{% endblock %}{% endfor %}",
        "{% for i in range(1000) %}{% if i < 0 %}{% else %}{% block a %}BODY{% endblock %}"
        "{% endif %}{% endfor %}",
        "{% macro m() %}{% block a %}BODY{% endblock %}{% endmacro %}"
        "{% for i in range(1000) %}{{ m() }}{% endfor %}",
    ],
    ids=["in a loop", "in a branch in a loop", "in a macro"],
)
def test_a_block_in_a_loop_or_macro_is_charged_once(monkeypatch, wrapped):
    inline = wrapped.replace("{% block a %}BODY{% endblock %}", BODY)
    assert _steps_spent(monkeypatch, wrapped.replace("BODY", BODY)) == _steps_spent(
        monkeypatch, inline
    )


def test_many_small_blocks_in_a_loop_cost_at_least_their_code_inline(monkeypatch):
    """A block counts for nothing around it and charges its own body: one smaller than a step's
    worth of nodes must still cost a step, or a loop of such blocks ran for nearly free
    (13 s of CPU within the budget)."""
    small = "{% if y.a %}" * 5 + "{% endif %}" * 5
    blocks = "".join(f"{{% block b{n} %}}{small}{{% endblock %}}" for n in range(100))
    wrapped = "{% for i in range(10) %}" + blocks + "{% endfor %}"
    inline = "{% for i in range(10) %}" + small * 100 + "{% endfor %}"
    assert _steps_spent(monkeypatch, wrapped) >= _steps_spent(monkeypatch, inline) > 500
