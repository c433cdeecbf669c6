"""Jinja2 in a sandbox with strict undefined: prompt templates and HTTP request bodies."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from utils.errors import InvalidInput

MAX_TEMPLATE_LENGTH = 100_000
MAX_REPEATED_LENGTH = 1_000_000  # items or characters that `*` may build
MAX_POWER_BITS = 100_000


def _json_default(value: Any) -> Any:
    """`tojson` of an undefined value: the strict undefined error naming it, not a TypeError."""
    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises UndefinedError here, with the missing name
        return None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=_json_default, **kwargs)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on `*` and `**`: `{{ 'x' * 10**10 }}` or `{{ 7 ** 1000000000 }}`
    would otherwise exhaust the server's memory or CPU (even at save time: unintercepted
    operators on constants are folded when the template compiles)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > MAX_REPEATED_LENGTH
                ):
                    raise SecurityError(
                        f"repetition longer than {MAX_REPEATED_LENGTH} is not allowed"
                    )
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and abs(left).bit_length() * right > MAX_POWER_BITS
        ):
            raise SecurityError("power too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.policies["json.dumps_function"] = _dumps
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
    return env


ENVIRONMENT = _environment()


@lru_cache(maxsize=512)
def _parse(source: str) -> nodes.Template:
    return ENVIRONMENT.parse(source)


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
    try:
        return ENVIRONMENT.from_string(source).render(variables)
    except UndefinedError as exc:
        raise InvalidInput(f"template variable problem: {exc.message}", field=field) from exc
    except SecurityError as exc:
        raise InvalidInput(f"template not allowed: {exc}", field="template") from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise InvalidInput(f"template failed to render: {exc}", field="template") from exc
