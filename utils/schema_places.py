"""The places in a JSON Schema that are schemas themselves, each with its base URI: a
keyword's value that is data (`const`, `enum`, `examples`, `default`) is not one, however
much it looks like a schema, so a `"pattern"` or a `"$ref"` in it is no pattern or reference."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

# Keywords whose value is a schema, a list of schemas, or schemas by name (every draft's).
_ONE = frozenset(
    {
        "additionalItems",
        "additionalProperties",
        "contains",
        "contentSchema",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
_MANY = frozenset({"allOf", "anyOf", "items", "oneOf", "prefixItems"})
_NAMED = frozenset(
    {"$defs", "definitions", "dependencies", "dependentSchemas", "patternProperties", "properties"}
)

Place = tuple[str, str, dict[str, Any]]  # where ("properties/a"), base URI, the schema


def schema_places(schema: Any, where: str = "", base: str = "") -> Iterator[Place]:
    """Every schema in `schema`, itself first (its nesting is bounded before)."""
    if not isinstance(schema, dict):
        return
    own = schema.get("$id")
    if isinstance(own, str):
        base = urljoin(base, own)
    yield where, base, schema
    for key, value in schema.items():
        at = f"{where}/{key}" if where else key
        if key in _NAMED and isinstance(value, dict):
            for name, item in value.items():
                yield from schema_places(item, f"{at}/{name}", base)
        elif key in _MANY and isinstance(value, list):
            for index, item in enumerate(value):
                yield from schema_places(item, f"{at}/{index}", base)
        elif key in _ONE:
            yield from schema_places(value, at, base)
