"""Jinja2 in a sandbox with strict undefined: prompt templates and HTTP request bodies.

Every render runs in a worker thread (`render_off_loop`) with a budget (`utils.template_budget`):
a step budget and a cap on the text it builds, both settings, so no template a tenant saves can
hold the event loop or the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import types
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Template
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import Markup

from utils import template_budget as budget
from utils.config import get_settings
from utils.errors import InvalidInput

MAX_TEMPLATE_LENGTH = 100_000
MAX_POWER_BITS = 100_000
# Renders of every tenant share these threads; each render is bounded by its budget.
_RENDER_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="template")


class TemplateTooCostly(InvalidInput):
    """The template went over its step budget or output cap: a fault of the template itself."""


def _json_default(value: Any) -> Any:
    """`tojson` of an undefined value: the strict undefined error naming it, not a TypeError."""
    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises UndefinedError here, with the missing name
        return None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=_json_default, **kwargs)


class _BudgetedCode(CodeGenerator):
    """`a ~ b` joins through the environment, which measures the parts before joining them."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with every operation that can build large values or loop long charged to
    the render's budget. `*`, `**`, `+` and `%` are intercepted, which also keeps them from
    being folded at compile time (`{{ 7 ** 1000000000 }}` would otherwise run on save)."""

    code_generator_class = _BudgetedCode
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    counted = staticmethod(budget.counted)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        spend = budget.current()
        spend.spend()
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    spend.allow(budget.weight(sequence, spend.max_chars) * max(times, 0))
        elif operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and abs(left) > 1
                and abs(left).bit_length() * right > MAX_POWER_BITS
            ):
                raise SecurityError("power too large")
        elif operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                spend.allow(
                    budget.weight(left, spend.max_chars) + budget.weight(right, spend.max_chars)
                )
        elif isinstance(left, str):  # `%` formatting
            budget.check_printf(left)
        return budget.check_built(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget.current().spend()
        args = budget.check_recursive_loop(__obj, args)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(
            getattr(__obj, "__self__", None), str
        ):
            budget.check_str_method(__obj, args, kwargs)
        return budget.check_built(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        text = value.__self__
        formatter_class = (
            budget.BoundedEscapeFormatter if isinstance(text, Markup) else budget.BoundedFormatter
        )
        formatter = formatter_class(
            self, **({"escape": text.escape} if isinstance(text, Markup) else {})
        )
        is_map = value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                return type(text)(formatter.vformat(text, (), args[0]))
            return type(text)(formatter.vformat(text, args, kwargs))

        return bounded

    def bounded_join(self, parts: tuple[Any, ...]) -> str:
        texts = [part if isinstance(part, str) else str(budget.check_built(part)) for part in parts]
        budget.current().allow(sum(map(len, texts)))
        return "".join(texts)

    def concat(self, parts: Any) -> str:
        """Every piece of output, at the top and in macros and `{% set %}` blocks."""
        spend = budget.current()
        pieces: list[str] = []
        size = 0
        for piece in parts:
            size += len(piece)
            if size > spend.max_chars:
                spend.allow(size, "output")
            pieces.append(piece)
        spend.allow(size, "output")
        return "".join(pieces)


def _finalize(value: Any) -> Any:
    """Before `{{ value }}` prints a collection: its printed size within the cap."""
    return value if isinstance(value, str) else budget.check_built(value)


def _environment() -> _Sandbox:
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.policies["json.dumps_function"] = _dumps
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
    env.globals.pop("lipsum")  # `lipsum(10**9)` would build without measure
    env.filters = {
        name: budget.bounded_filter(name, function)
        for name, function in env.filters.items()
        if name not in budget.REMOVED_FILTERS
    }
    return env


ENVIRONMENT = _environment()


@lru_cache(maxsize=512)
def _parse(source: str) -> nodes.Template:
    return ENVIRONMENT.parse(source)


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    """The template with every for loop's iterable counted, one step per iteration."""
    ast = ENVIRONMENT.parse(source)
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.EnvironmentAttribute("counted"), [loop.iter], [], None, None)
    return ENVIRONMENT.from_string(ast)


def check_template(source: str, *, field: str) -> set[str]:
    """Compile-check a template; returns the variables it uses. 422 with the line on error."""
    try:
        ast = _parse(source)
        ENVIRONMENT.compile(ast)
    except TemplateSyntaxError as exc:
        raise InvalidInput(
            f"template does not compile (line {exc.lineno}): {exc.message}",
            errors=[{"field": field, "line": exc.lineno, "message": exc.message or "syntax error"}],
        ) from exc
    return meta.find_undeclared_variables(ast)


def render(source: str, variables: dict[str, Any], *, field: str = "variables") -> str:
    """On the calling thread: for work that is already off the event loop."""
    used = check_template(source, field="template")
    missing = sorted(name for name in used if name not in variables)
    if missing:
        raise InvalidInput(
            f"missing template variable(s): {', '.join(missing)}",
            errors=[
                {"field": f"{field}.{name}", "message": "is required by the template"}
                for name in missing
            ],
        )
    settings = get_settings()
    token = budget.start(
        budget.Budget(
            steps=settings.template_max_steps, max_chars=settings.template_max_output_chars
        )
    )
    try:
        return _compiled(source).render(variables)
    except budget.BudgetExceeded as exc:
        raise TemplateTooCostly(f"template too costly: {exc}", field="template") from exc
    except RecursionError as exc:
        raise TemplateTooCostly("template recursion too deep", field="template") from exc
    except UndefinedError as exc:
        raise InvalidInput(f"template variable problem: {exc.message}", field=field) from exc
    except SecurityError as exc:
        raise InvalidInput(f"template not allowed: {exc}", field="template") from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise InvalidInput(f"template failed to render: {exc}", field="template") from exc
    finally:
        budget.finish(token)


async def render_off_loop(
    source: str, variables: dict[str, Any], *, field: str = "variables"
) -> str:
    """`render` in one of the template threads: the event loop keeps serving meanwhile."""
    call = partial(render, source, variables, field=field)
    return await asyncio.get_running_loop().run_in_executor(_RENDER_THREADS, call)
