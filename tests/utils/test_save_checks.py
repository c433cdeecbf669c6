"""What saving checks runs in threads of its own, bounded: a JSON Schema's check is kept by its
text and bounded by the schemas it holds, a body's schemas are checked once each and together
within a bound, and a template's check neither takes the threads renders share nor compiles a
template past its count of nodes."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from utils import save_checks, templates
from utils.errors import InvalidInput
from utils.json_schemas import MAX_SUBSCHEMAS, check_json_schema, subschema_count
from utils.template_compiling import MAX_TEMPLATE_NODES


def fresh_schema(**extra: Any) -> dict[str, Any]:
    """A schema no test checked before (verdicts are kept for the process)."""
    return {"type": "object", "description": str(uuid.uuid4()), **extra}


def test_a_schema_checked_before_is_not_checked_again(metaschema_checks):
    schema = fresh_schema(properties={"q": {"type": "string"}})
    for _ in range(3):
        assert check_json_schema(dict(schema)) == schema
    invalid = fresh_schema(properties={"q": {"type": 5}})
    for _ in range(3):
        with pytest.raises(ValueError, match="not a valid JSON schema at properties/q/type"):
            check_json_schema(dict(invalid))
    assert len(metaschema_checks) == 2


def test_subschemas_are_counted_booleans_included():
    schema: dict[str, Any] = {
        "allOf": [{}, {}, {}],
        "properties": {"a": True, "b": {"items": False}},
    }
    assert subschema_count(schema) == 7  # the root, 3 in allOf, a, b and b's items


def test_a_schema_holding_too_many_schemas_is_refused_unchecked(metaschema_checks):
    # 32 KB of `{}`s took 4 s to check against the metaschema; its size is within bounds.
    schema: dict[str, Any] = {"allOf": [{}] * (MAX_SUBSCHEMAS + 1)}
    with pytest.raises(ValueError, match=f"at most {MAX_SUBSCHEMAS:,} schemas"):
        check_json_schema(schema)
    assert metaschema_checks == []


async def test_a_bodys_schemas_are_checked_once_each_in_a_save_check_thread(metaschema_checks):
    schema = fresh_schema(properties={"q": {"type": "string"}})
    other = fresh_schema()
    listed = [(f"tools.{index}", dict(schema)) for index in range(100)] + [("tools.100", other)]
    await save_checks.check_schemas(listed, field="tools")
    assert len(metaschema_checks) == 2
    assert all(name.startswith("save-check") for name in metaschema_checks), metaschema_checks


async def test_a_bodys_bad_schema_is_a_422_naming_its_field():
    listed = [("tools.0", fresh_schema()), ("tools.1", fresh_schema(type=5))]
    with pytest.raises(InvalidInput) as refused:
        await save_checks.check_schemas(listed, field="tools")
    assert refused.value.errors is not None
    assert refused.value.errors[0]["field"] == "tools.1"
    assert refused.value.errors[0]["message"].startswith("not a valid JSON schema at type")


async def test_a_bodys_schemas_holding_too_many_schemas_together_are_refused(metaschema_checks):
    each = save_checks.MAX_BODY_SUBSCHEMAS // 10 + 1
    listed = [(f"tools.{i}", fresh_schema(allOf=[{}] * (each - 1))) for i in range(10)]
    with pytest.raises(InvalidInput) as refused:
        await save_checks.check_schemas(listed, field="tools")
    assert refused.value.errors is not None
    assert refused.value.errors[0]["field"] == "tools"
    assert len(metaschema_checks) < 10  # refused as soon as counted past the bound


async def test_renders_never_wait_for_the_checks_of_saves(monkeypatch: pytest.MonkeyPatch):
    """Both save-check threads held by checks: a render still runs (sharing the render
    threads, two long checks made every tenant's render wait for them)."""
    saved = "{{ saved }}"
    release = threading.Event()
    started = threading.Semaphore(0)
    check = templates.check_template

    def held(source: str, *, field: str) -> set[str]:
        if source == saved:
            started.release()
            release.wait(60)
        return check(source, field=field)

    monkeypatch.setattr(templates, "check_template", held)
    saves = [
        asyncio.ensure_future(templates.check_template_off_loop(saved, field="template"))
        for _ in range(2)
    ]
    try:
        for _ in range(2):
            assert await asyncio.to_thread(started.acquire, True, 30)
        rendered = await asyncio.wait_for(templates.render_off_loop("Hi {{ x }}", {"x": "y"}), 30)
        assert rendered == "Hi y"
    finally:
        release.set()
        await asyncio.gather(*saves)


def test_a_template_past_the_count_of_nodes_is_refused_before_its_code_is_made(
    monkeypatch: pytest.MonkeyPatch,
):
    at_most = "{{ a }}" * (MAX_TEMPLATE_NODES - 2)  # the template, its output, each name
    assert templates.check_template(at_most, field="template") == {"a"}
    made: list[object] = []
    compile_ast = templates.ENVIRONMENT.from_string

    def spy(ast: Any) -> Any:
        made.append(ast)
        return compile_ast(ast)

    monkeypatch.setattr(templates.ENVIRONMENT, "from_string", spy)
    with pytest.raises(InvalidInput, match=f"more than {MAX_TEMPLATE_NODES:,} nodes") as refused:
        templates.check_template(at_most + "{{ a }}", field="system_prompt")
    assert refused.value.errors == [{"field": "system_prompt", "message": str(refused.value)}]
    assert made == []


def test_a_template_is_parsed_once_to_check_and_render(monkeypatch: pytest.MonkeyPatch):
    parsed: list[str] = []
    parse = templates.ENVIRONMENT.parse

    def spy(source: str) -> Any:
        parsed.append(source)
        return parse(source)

    monkeypatch.setattr(templates.ENVIRONMENT, "parse", spy)
    source = f"{{{{ name }}}} {uuid.uuid4()}"
    assert templates.check_template(source, field="template") == {"name"}
    assert templates.render(source, {"name": "x"}).startswith("x ")
    assert parsed == [source]
