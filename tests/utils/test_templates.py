"""Template budgets: every way a template can loop long or build large text is refused with a
422-style `TemplateTooCostly` before it costs the server time or memory, while ordinary
templates render as before."""

from __future__ import annotations

import asyncio
import resource
import threading
import time

import pytest

from utils.errors import InvalidInput
from utils.templates import TemplateTooCostly, render, render_off_loop

ATTACKS = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(2000) %}{% endfor %}"
    "{% endfor %}",
    "ljust": "{{ 'x'.ljust(200000000) }}",
    "zfill": "{{ '1'.zfill(300000000) }}",
    "format width": "{{ '{:200000000}'.format(1) }}",
    "nested format width": "{{ '{0:{1}}'.format('x', 200000000) }}",
    "format precision": "{{ '{:.200000000f}'.format(1.5) }}",
    "printf width": "{{ '%200000000s' % 'x' }}",
    "printf star": "{{ '%*s' % (200000000, 'x') }}",
    "format filter": "{{ '%200000000s'|format('x') }}",
    "center filter": "{{ 'x'|center(200000000) }}",
    "indent filter": "{{ ('\\n' * 100000)|indent(100000) }}",
    "expandtabs": "{{ ('\\t' * 100000).expandtabs(100000) }}",
    "replace": "{{ ('x' * 1000).replace('', 'y' * 100000) }}",
    "join": "{{ ('x' * 1000000).join(range(100000)|map('string')|list) }}",
    "tojson indent": "{{ (range(100000)|list)|tojson(indent=100000) }}",
    "slice": "{{ [1]|slice(1000000000)|list }}",
    "sum of lists": "{{ range(10000)|map('string')|map('list')|sum(start=[]) }}",
    "doubling with ~": "{% set ns = namespace(x='x') %}"
    "{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
    "doubling with +": "{% set ns = namespace(x=[1]) %}"
    "{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x }}",
    "shared rows printed": "{{ [[0] * 1000000] * 1000000 }}",
    "macro capturing repeats": "{% macro m() %}{% for i in range(99999) %}{{ 'x' * 1000000 }}"
    "{% endfor %}{% endmacro %}{{ m() }}",
    "literal text in a loop": "{% set s %}{% for i in range(99999) %}"
    + "a" * 50_000
    + "{% endfor %}{% endset %}{{ s }}",
    "branching macro recursion": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}"
    "{% endif %}{% endmacro %}{{ f(40) }}",
    "endless recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "recursive loop": "{% for x in range(1000) recursive %}{% if loop.depth < 4 %}"
    "{{ loop(range(1000)) }}{% endif %}{% endfor %}",
}


@pytest.mark.parametrize("template", ATTACKS.values(), ids=ATTACKS.keys())
def test_every_attack_is_refused_quickly_without_building(template):
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    with pytest.raises(TemplateTooCostly) as refused:
        render(template, {})
    assert refused.value.status == 422
    assert refused.value.errors == [{"field": "template", "message": refused.value.detail}]
    assert time.process_time() - started < 3
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before) / 1024
    assert grown_mb < 100


def test_lipsum_and_html_filters_are_not_offered():
    with pytest.raises(InvalidInput, match="lipsum"):
        render("{{ lipsum(1000000000) }}", {})
    for name in ("striptags", "urlize"):
        with pytest.raises(InvalidInput):
            render(f"{{{{ x|{name} }}}}", {"x": "<b>" * 100_000})


ORDINARY = [
    ("Hello {{ name }}!", {"name": "Ann"}, "Hello Ann!"),
    ("{% for c in ctx %}- {{ c }}\n{% endfor %}", {"ctx": ["a", "b"]}, "- a\n- b\n"),
    (
        "{{ '{:>5}'.format(3) }}|{{ '%05d' % 7 }}|{{ '%(a)s' % d }}",
        {"d": {"a": 1}},
        "    3|00007|1",
    ),
    ("{{ items|join(', ') }} {{ 'ab'|center(6) }}|", {"items": [1, 2]}, "1, 2   ab  |"),
    ("{{ d|tojson }} {{ d|tojson(indent=1) }}", {"d": {"k": 1}}, '{"k": 1} {\n "k": 1\n}'),
    ("{{ 'a' ~ n ~ [1] }} {{ 'ab' + 'c' }} {{ [1] + [2] }}", {"n": 2}, "a2[1] abc [1, 2]"),
    ("{{ '-' * 3 }}{{ 2 ** 10 }} {{ nums|sum }}", {"nums": [1, 2.5]}, "---1024 3.5"),
    ("{{ 'a\tb'.expandtabs(4) }}{{ 'x'.ljust(3) }}|", {}, "a   bx  |"),
    ("{{ text|indent(2, first=true) }}", {"text": "a\nb"}, "  a\n  b"),
    ("{{ '{name}'.format_map(d) }}", {"d": {"name": "Bo"}}, "Bo"),
    (
        "{% for x in tree recursive %}{{ x.n }}{% if x.c %}({{ loop(x.c) }}){% endif %}"
        "{% endfor %}",
        {"tree": [{"n": 1, "c": [{"n": 2, "c": []}]}, {"n": 3, "c": []}]},
        "1(2)3",
    ),
    (
        "{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ loop.cycle('a', 'b') }} "
        "{% endfor %}",
        {"xs": [7, 8]},
        "1/2a 2/2b ",
    ),
]


@pytest.mark.parametrize(("template", "variables", "expected"), ORDINARY)
def test_ordinary_templates_render_as_before(template, variables, expected):
    assert render(template, variables) == expected


def test_long_variables_pass_through_within_the_cap():
    context = "word " * 150_000  # 750,000 characters
    assert render("Context: {{ context }}", {"context": context}) == "Context: " + context


def test_both_limits_are_settings(settings, monkeypatch):
    loop = "{% for i in range(5000) %}.{% endfor %}"
    assert render(loop, {}) == "." * 5000
    monkeypatch.setattr(settings, "template_max_steps", 1000)
    with pytest.raises(TemplateTooCostly, match="step budget"):
        render(loop, {})
    monkeypatch.setattr(settings, "template_max_steps", 100_000)
    monkeypatch.setattr(settings, "template_max_output_chars", 4000)
    with pytest.raises(TemplateTooCostly, match="cap of 4000"):
        render(loop, {})


async def test_renders_run_off_the_event_loop():
    seen: list[str] = []

    def spy(_: object) -> str:
        seen.append(threading.current_thread().name)
        return "x"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    heavy = "{% for i in range(30000) %}{{ f(i) if i == 0 else '%05d' % i }}{% endfor %}"
    started = time.perf_counter()
    text = await render_off_loop(heavy, {"f": spy})
    took = time.perf_counter() - started
    beat.cancel()
    assert text.startswith("x00001") and len(text) == 1 + 5 * 29_999
    assert seen and seen[0].startswith("template")
    # The loop went on ticking while the render ran in its thread (none would on the loop).
    assert ticks >= min(3, int(took / 0.01) // 2), (ticks, took)
    assert ticks >= 1
