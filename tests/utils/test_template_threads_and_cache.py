"""Runs' renders have threads apart from renders asked for through the API, and the cache of
compiled templates is bounded by the nodes they hold, not only by their count."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from utils import template_compiling as compiling
from utils import templates


async def test_a_runs_render_does_not_wait_behind_interactive_ones(monkeypatch):
    render = templates.render
    release = threading.Event()
    entered = threading.Semaphore(0)

    def held(source: str, variables: dict[str, Any], **kwargs: Any) -> str:
        if "held" in source:
            entered.release()
            release.wait(timeout=60)
        return render(source, variables, **kwargs)

    monkeypatch.setattr(templates, "render", held)
    interactive = [
        asyncio.ensure_future(templates.render_off_loop("{# held #}x", {}, interactive=True))
        for _ in range(4)
    ]
    try:
        for _ in range(4):  # every interactive thread is taken
            assert await asyncio.to_thread(entered.acquire, timeout=60)
        runs_render = asyncio.ensure_future(templates.render_off_loop("Hi {{ a }}", {"a": 1}))
        done, _ = await asyncio.wait([runs_render, *interactive], return_when="FIRST_COMPLETED")
        assert done == {runs_render}
        assert runs_render.result() == "Hi 1"
    finally:
        release.set()
        await asyncio.gather(*interactive)


def _template(tag: int, variable_count: int) -> str:
    return f"{{{{ x{tag} }}}}" + "".join(f"{{{{ a{i} }}}}" for i in range(variable_count))


def test_the_compile_cache_holds_at_most_its_budget_of_nodes(monkeypatch):
    # A fresh cache as the templates module builds its own: the nodes a compiled template
    # holds are what it keeps alive (5,000 of them some 2 MB).
    cache = compiling.CompiledCache[Any](
        max_nodes=templates._COMPILED.max_nodes, max_entries=templates._COMPILED.max_entries
    )
    monkeypatch.setattr(templates, "_COMPILED", cache)
    for tag in range(12):  # each of 4,993 nodes: some 60,000 in all
        templates.check_template(_template(tag, 4_990), field="template")
    entries, nodes = cache.held()
    assert nodes <= 50_000
    assert entries == 10
    # The most recent stay; the least recently used went first.
    assert cache.get(_template(11, 4_990)) is not None
    assert cache.get(_template(0, 4_990)) is None


def test_the_compile_cache_keeps_small_templates_by_count_and_reuses_them(monkeypatch):
    cache = compiling.CompiledCache[Any](max_nodes=50_000, max_entries=3)
    monkeypatch.setattr(templates, "_COMPILED", cache)
    for tag in range(5):
        templates.check_template(_template(tag, 1), field="template")
    assert cache.held()[0] == 3
    compiled = cache.get(_template(4, 1))
    assert compiled is not None and templates._compiled(_template(4, 1)) is compiled


@pytest.mark.parametrize("source", ["{{ a", "{% for %}"])
def test_a_template_that_does_not_compile_is_not_cached(monkeypatch, source):
    cache = compiling.CompiledCache[Any](max_nodes=50_000)
    monkeypatch.setattr(templates, "_COMPILED", cache)
    with pytest.raises(templates.InvalidInput):
        templates.check_template(source, field="template")
    assert cache.held() == (0, 0)
