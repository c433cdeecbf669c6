"""JSON Schemas that apply themselves to the value they are validating (`{"$ref": "#"}`, or
two `$defs` whose `allOf`s refer to each other): validating with one recurses until Python's
stack runs out, whatever the value. Found by following the schema's references and the
keywords that apply schemas to the same value, as jsonschema follows them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema_specifications import REGISTRY as SPECIFICATIONS

from utils.schema_places import schema_places

REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose schemas apply to the very value their own schema is applied to.
_SAME_VALUE_ONE = ("not", "if", "then", "else")
_SAME_VALUE_MANY = ("allOf", "anyOf", "oneOf")
_SAME_VALUE_NAMED = ("dependentSchemas", "dependencies")

_Reached = tuple[dict[str, Any], Any]  # a schema, and the resolver of its references
# Up to draft 7 a `$ref` stands alone: the keywords beside it are not applied.
_REF_ALONE = (
    jsonschema.Draft3Validator,
    jsonschema.Draft4Validator,
    jsonschema.Draft6Validator,
    jsonschema.Draft7Validator,
)


def applies_itself(schema: Any) -> bool:
    """Whether a schema of `schema`, through references and keywords that apply schemas to the
    same value, comes to be applied again to a value it is being applied to. A reference that
    names nothing is left to validation, which says so; nothing is fetched (the standard
    metaschemas are known)."""
    if not isinstance(schema, dict):
        return False
    validator = jsonschema.validators.validator_for(schema)
    specification = referencing.jsonschema.specification_with(
        validator.ID_OF(validator.META_SCHEMA) or "urn:unknown-dialect",
        default=referencing.Specification.OPAQUE,
    )
    resource = specification.create_resource(schema)
    registry = SPECIFICATIONS.with_resource(resource.id() or "", resource)
    walked: set[int] = set()  # the schemas everything reached from was walked
    for _, base, place in schema_places(schema):
        resolver = registry.resolver(base_uri=base)  # as validation reaches the place
        if id(place) not in walked and _walk_finds_a_loop(
            place, resolver, (specification, validator in _REF_ALONE), walked
        ):
            return True
    return False


_Dialect = tuple[Any, bool]  # the specification, and whether a `$ref` stands alone


def _walk_finds_a_loop(
    schema: dict[str, Any], resolver: Any, dialect: _Dialect, walked: set[int]
) -> bool:
    """A depth-first walk from `schema`, without recursing (a chain of references may be
    long), past the schemas `walked` before."""
    on_path = {id(schema)}  # the schemas being applied, each by the one before
    path = [(schema, _same_value(schema, resolver, dialect))]
    while path:
        current, reached = path[-1]
        following = next(reached, None)
        if following is None:
            path.pop()
            on_path.discard(id(current))
            walked.add(id(current))
            continue
        part, part_resolver = following
        if id(part) in on_path:
            return True
        if id(part) not in walked:
            on_path.add(id(part))
            path.append((part, _same_value(part, part_resolver, dialect)))
    return False


def _same_value(schema: dict[str, Any], resolver: Any, dialect: _Dialect) -> Iterator[_Reached]:
    """The schemas (not booleans) `schema` applies to the value it is applied to."""
    specification, ref_alone = dialect
    if ref_alone and "$ref" in schema:
        yield from _referenced(schema, resolver, ("$ref",))
        return
    parts = [schema.get(keyword) for keyword in _SAME_VALUE_ONE]
    for keyword in _SAME_VALUE_MANY:
        if isinstance(schema.get(keyword), list):
            parts += schema[keyword]
    for keyword in _SAME_VALUE_NAMED:
        if isinstance(schema.get(keyword), dict):
            parts += schema[keyword].values()
    for part in parts:
        if isinstance(part, dict):  # its references resolve against its own `$id`, if any
            yield part, resolver.in_subresource(specification.create_resource(part))
    yield from _referenced(schema, resolver, REFERENCES)


def _referenced(
    schema: dict[str, Any], resolver: Any, keywords: tuple[str, ...]
) -> Iterator[_Reached]:
    for keyword in keywords:
        ref = schema.get(keyword)
        if not isinstance(ref, str):
            continue
        try:
            resolved = resolver.lookup(ref)
        except (referencing.exceptions.Unresolvable, LookupError):
            continue
        if isinstance(resolved.contents, dict):
            yield resolved.contents, resolved.resolver
