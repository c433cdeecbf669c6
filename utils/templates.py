"""Jinja2 in a sandbox with strict undefined: prompt templates and HTTP request bodies.

Every render runs in a worker thread (`render_off_loop`) with a budget (`utils.template_budget`):
a step budget and a cap on what it builds, both settings, so no template a tenant saves can hold
the event loop or the server's memory. Renders asked for through the API (`interactive`) have
threads of their own: a flood of them never queues a run's renders behind it. Checking a
template on save compiles it without running any of it, in threads of its own
(`check_template_off_loop`, `utils.save_checks`): a save never queues a run's renders behind it.
"""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NamedTuple

from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
)
from jinja2.environment import Template
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Cycler, Namespace
from markupsafe import Markup

from utils import save_checks, template_reading
from utils import template_budget as budget
from utils import template_compiling as compiling
from utils import template_filters as filters
from utils import template_hashing as hashing
from utils import template_operators as priced
from utils.config import get_settings
from utils.errors import InvalidInput

MAX_TEMPLATE_LENGTH = 100_000
# Renders of every tenant share these threads; each render is bounded by its budget. Runs'
# renders have two; renders asked for through the API four, of which an organization takes at
# most two at a time (`database.prompts.service`), so others' renders still find threads free.
_RENDER_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="template")
_INTERACTIVE_RENDER_THREADS = ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="template-interactive"
)


class _Compiled(NamedTuple):
    template: Template
    required: frozenset[str]  # the variables the caller must give
    # What would fail every render it runs in (template_reading.never_rendering): refused when
    # saved only, so a template stored before renders as it did where that branch is not taken.
    never_renders: TemplateSyntaxError | None


# Compiled templates kept, by the nodes they hold: what one keeps alive grows with them (5,000
# nodes held some 2 MB), so a cap on their count alone let a few hundred large ones pin
# hundreds of MB. This keeps some tens of MB at most.
_COMPILED = compiling.CompiledCache[_Compiled](max_nodes=50_000)


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


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with every operation that can build large values or loop long charged to
    the render's budget; every arithmetic operator goes through `template_operators.check_binop`."""

    code_generator_class = compiling.BudgetedCode
    intercepted_binops = frozenset({"*", "**", "+", "-", "/", "//", "%"})
    counted = staticmethod(budget.counted)
    spent = staticmethod(budget.spent)
    literal_dict = staticmethod(hashing.literal_dict)
    compared = staticmethod(budget.compared)
    built = staticmethod(budget.check_built)
    held = staticmethod(budget.check_held)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        priced.check_binop(operator, left, right)
        return budget.check_built(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget.current().spend()
        args = budget.check_recursive_loop(__obj, args)
        if isinstance(__obj, Macro):  # its `varargs` and `kwargs` hold what it is given
            budget.check_held(args)
            budget.check_held(kwargs)
        elif __obj is Namespace or getattr(__obj, "__func__", None) is LoopContext.changed:
            for value in args:  # a namespace's pairs are hashed; `changed` compares with `!=`
                budget.compared(value)
        elif __obj is dict and args and not isinstance(args[0], Mapping):  # pairs, hashed
            args = (
                hashing.hashed(hashing.as_pairs(budget.counted(args[0])), hashing.key_of_pair),
                *args[1:],
            )
        if isinstance(__obj, types.BuiltinMethodType):
            budget.check_method(__obj, args, kwargs)
        return budget.check_built(super().call(__context, __obj, *args, **kwargs))

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget.compared(argument)  # a key is hashed, as deep as it goes
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        text = value.__self__
        formatter_class = (
            priced.BoundedEscapeFormatter if isinstance(text, Markup) else priced.BoundedFormatter
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
        texts = [
            part if isinstance(part, str) else str(budget.check_printed(part)) for part in parts
        ]
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
    """Before `{{ value }}` prints a collection or namespace: its printed size within the cap."""
    return value if isinstance(value, str) else budget.check_printed(value)


def _cycler(*items: Any) -> Cycler:
    """jinja's cycler, its items (a tuple it offers as `.items`) weighed as a literal's."""
    return Cycler(*budget.check_held(items))


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
    env.globals["cycler"] = _cycler
    env.filters = {
        name: filters.bounded_filter(name, function)
        for name, function in env.filters.items()
        if name not in filters.REMOVED_FILTERS
    }
    env.tests = {name: filters.bounded_test(name, test) for name, test in env.tests.items()}
    return env


ENVIRONMENT = _environment()


def _compiled(source: str) -> _Compiled:
    """The template, compiled as it renders (`template_compiling.instrument`), and the
    variables it uses: parsed once while cached, and refused past MAX_TEMPLATE_NODES before any
    code is generated."""
    cached = _COMPILED.get(source)
    if cached is not None:
        return cached
    ast = ENVIRONMENT.parse(source)
    node_count = compiling.refuse_too_many_nodes(ast)
    never_renders = template_reading.never_rendering(ast, ENVIRONMENT)
    variables = compiling.Variables(ENVIRONMENT)
    variables.visit(ast)
    required = frozenset(variables.undeclared_identifiers - template_reading.assigned(ast))
    compiling.instrument(ast)
    compiled = _Compiled(ENVIRONMENT.from_string(ast), required, never_renders)
    _COMPILED.put(source, compiled, node_count)
    return compiled


def check_template(source: str, *, field: str) -> set[str]:
    """The check of a template as it is saved: compiled as it will render, and refused when
    it would fail every render it runs in (template_reading.never_rendering); returns the
    variables it uses. 422 with the line on error. Nothing in the template runs: this takes
    time in proportion to its length, up to its parse when it holds too many nodes to
    compile."""
    compiled = _compile_checked(source, field=field)
    if compiled.never_renders is not None:
        raise _does_not_compile(compiled.never_renders, field)
    return set(compiled.required)


def _does_not_compile(exc: TemplateSyntaxError, field: str) -> InvalidInput:
    return InvalidInput(
        f"template does not compile (line {exc.lineno}): {exc.message}",
        errors=[{"field": field, "line": exc.lineno, "message": exc.message or "syntax error"}],
    )


def _compile_checked(source: str, *, field: str) -> _Compiled:
    """`_compiled`, its errors a 422 naming `field` (and the line, where there is one)."""
    try:
        return _compiled(source)
    except TemplateSyntaxError as exc:
        raise _does_not_compile(exc, field) from exc
    except compiling.TooManyNodes as exc:
        raise InvalidInput(
            f"template too large to compile: it holds more than {compiling.MAX_TEMPLATE_NODES:,}"
            " nodes (pieces of text, expressions, names, tags)",
            field=field,
        ) from exc
    except (RecursionError, SyntaxError) as exc:  # jinja's parser, or Python's limits on nesting
        raise InvalidInput(
            "template does not compile: it nests too deeply (brackets, blocks or filters)",
            field=field,
        ) from exc
    except ValueError as exc:  # an integer literal of more digits than Python converts
        raise InvalidInput(
            "template does not compile: a number in it is too long", field=field
        ) from exc


async def check_template_off_loop(source: str, *, field: str) -> set[str]:
    """`check_template` in a save-check thread, for request handlers."""
    return await save_checks.off_loop(partial(check_template, source, field=field))


def render(
    source: str,
    variables: dict[str, Any],
    *,
    field: str = "variables",
    template_field: str = "template",
) -> str:
    """On the calling thread: for work that is already off the event loop. `field` names the
    variables (a missing one is `{field}.{name}`), `template_field` the template rendered: its
    errors are that field's, and their messages name it (`system_prompt`: "system prompt")."""
    compiled = _compile_checked(source, field=template_field)  # as stored: see `_Compiled`
    called = template_field.rsplit(".", 1)[-1].replace("_", " ")
    missing = sorted(name for name in compiled.required if name not in variables)
    if missing:
        raise InvalidInput(
            f"missing {called} variable(s): {', '.join(missing)}",
            errors=[
                {"field": f"{field}.{name}", "message": f"is required by the {called}"}
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
        return _unicode(compiled.template.render(variables), template_field, called)
    except budget.BudgetExceeded as exc:
        raise TemplateTooCostly(f"{called} too costly: {exc}", field=template_field) from exc
    except RecursionError as exc:
        raise TemplateTooCostly(f"{called} recursion too deep", field=template_field) from exc
    except UndefinedError as exc:  # (its words quote the name, or the key, not found)
        raise InvalidInput(f"{called} variable problem: {_said(exc)}", field=field) from exc
    except SecurityError as exc:
        raise InvalidInput(f"{called} not allowed: {exc}", field=template_field) from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        message = f"{called} failed to render: {_said(exc)}"
        raise InvalidInput(message, field=template_field) from exc
    except (LookupError, AssertionError, AttributeError, TemplateError) as exc:
        # `"%(a)s" % {}`, a filter given an argument it refuses or a value of another type
        # (`indent` a list: the sandbox makes a missing attribute Undefined, so only a filter
        # raises this), a test or filter by an unknown name: the template's own fault (or its
        # variables'), found only as it runs.
        message = f"{called} failed to render: {type(exc).__name__}: {_said(exc)}".rstrip(": ")
        raise InvalidInput(message, field=template_field) from exc
    finally:
        budget.finish(token)


def _said(exc: BaseException, most: int = 300) -> str:
    """An error's words, cut short: some quote the value they failed on (`list.index` its
    whole repr, up to the output cap)."""
    text = str(exc)
    return text if len(text) <= most else text[:most] + "…"


def _unicode(rendered: str, field: str, called: str) -> str:
    """A rendered text that can be sent: a string literal's escape can make a lone surrogate,
    which no encoding of Unicode holds."""
    if not rendered.isascii():
        try:
            rendered.encode()
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"the {called} rendered a lone surrogate ({rendered[exc.start]!a}), which is"
                " not text",
                field=field,
            ) from exc
    return rendered


async def render_off_loop(
    source: str,
    variables: dict[str, Any],
    *,
    field: str = "variables",
    template_field: str = "template",
    interactive: bool = False,
) -> str:
    """`render` in one of the template threads: the event loop keeps serving meanwhile.
    `interactive`: asked for through the API, in threads apart from runs' renders."""
    call = partial(render, source, variables, field=field, template_field=template_field)
    threads = _INTERACTIVE_RENDER_THREADS if interactive else _RENDER_THREADS
    return await asyncio.get_running_loop().run_in_executor(threads, call)
