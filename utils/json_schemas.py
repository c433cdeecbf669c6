"""JSON Schemas that tenants send (metric parameters, tool definitions, expected arguments):
checked against their own metaschema before anything is validated with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import regex
from jsonschema.exceptions import ValidationError

from utils.patterns import PatternTooCostly, compile_bounded


def check_json_schema(value: Any) -> Any:
    """`value` when it is a valid JSON Schema; a ValueError saying where it is not."""
    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ValueError(f"not a valid JSON schema at {where}: {exc.message}") from None
    return value


# Validation with tenants' schemas: their `pattern`s run on text a model wrote, so a pattern
# that backtracks for ever must not hold the process. jsonschema matches with `re`, which has
# no time limit (and holds the interpreter); these keywords match with `regex` and a timeout.
PATTERN_SECONDS = 0.5


class SchemaTooCostly(ValueError):
    """A schema's pattern took longer than PATTERN_SECONDS on one value."""


def _search(pattern: str, text: str) -> bool:
    try:
        return compile_bounded(pattern).search(text, timeout=PATTERN_SECONDS) is not None
    except TimeoutError:
        raise SchemaTooCostly(
            f"the schema's pattern {pattern[:100]!r} took longer than {PATTERN_SECONDS} s"
        ) from None
    except (regex.error, PatternTooCostly) as exc:
        raise SchemaTooCostly(f"the schema's pattern {pattern[:100]!r}: {exc}") from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, allowed: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in named and not any(_search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        listed = ", ".join(repr(extra) for extra in sorted(extras))
        yield ValidationError(f"additional properties are not allowed ({listed} unexpected)")


_BOUNDED: dict[type, type] = {}


def bounded_validator(schema: Any) -> Any:
    """A validator of `schema` whose patterns run with a time limit (SchemaTooCostly past
    it); `unevaluatedProperties` beside `patternProperties` is refused, its matching being
    jsonschema's own."""
    text = json.dumps(schema)
    if '"unevaluatedProperties"' in text and '"patternProperties"' in text:
        raise SchemaTooCostly("unevaluatedProperties with patternProperties is not supported")
    base = jsonschema.validators.validator_for(schema)
    bounded = _BOUNDED.get(base)
    if bounded is None:
        bounded = _BOUNDED[base] = jsonschema.validators.extend(
            base,
            {
                "pattern": _pattern,
                "patternProperties": _pattern_properties,
                "additionalProperties": _additional_properties,
            },
        )
    return bounded(schema)
