"""Jinja2 in a sandbox with strict undefined: prompt templates and HTTP request bodies."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from app.errors import InvalidInput

MAX_TEMPLATE_LENGTH = 100_000


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
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


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
