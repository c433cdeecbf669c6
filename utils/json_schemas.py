"""JSON Schemas that tenants send (metric parameters, tool definitions, expected arguments):
checked against their own metaschema before anything is validated with them, and validated
with (`first_error`, `all_errors`) within a time budget.

Checking a schema costs in proportion to the schemas it holds, which are counted and bounded
first (`measure_json_schema`); each verdict is kept by the digest of the schema's text. A
request's schemas are checked off the event loop (`utils.save_checks`).

Validation's work is not bounded by the schema's size: `$ref`s that each refer twice to the
one before double it at every step (1.8 KB of them take minutes), and patterns each take up to
their own limit. Every keyword a validation applies first looks at the validation's deadline;
`uniqueItems` (quadratic in jsonschema for objects) is checked here in linear time."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urljoin

import jsonschema
import referencing
import referencing.exceptions
import regex
from jsonschema.exceptions import ValidationError
from jsonschema_specifications import REGISTRY as SPECIFICATIONS

from utils import fastjson
from utils.check_budget import OutOfTime, one_budget, seconds_left
from utils.patterns import PatternTooCostly, compile_bounded
from utils.schema_loops import REFERENCES, applies_itself
from utils.schema_places import schema_places
from utils.schemas import nesting_depth


def refuse_oversized_schema(value: Any) -> None:
    """A ValueError for a schema nested or sized past the bounds: the least there is to learn
    of a schema, and the cheapest."""
    if nesting_depth(value, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"a JSON schema nests at most {MAX_SCHEMA_DEPTH} levels deep")
    if len(fastjson.dumps_bytes(value)) > MAX_SCHEMA_BYTES:
        raise ValueError(f"a JSON schema holds at most {MAX_SCHEMA_BYTES // 1024} KB")


def measure_json_schema(value: Any) -> int:
    """How many schemas `value` holds (`subschema_count`), refusing with a ValueError one past
    the bounds of its nesting, its size or that count: what it costs to check."""
    refuse_oversized_schema(value)
    count = subschema_count(value)
    if count > MAX_SUBSCHEMAS:
        raise ValueError(
            f"a JSON schema holds at most {MAX_SUBSCHEMAS:,} schemas (objects and booleans in"
            f" its places for schemas), not {count:,}"
        )
    return count


def check_json_schema(value: Any) -> Any:
    """`value` when it is a valid JSON Schema; a ValueError saying where it is not. The
    verdict on each schema's text is kept: a schema checked before is not checked again."""
    measure_json_schema(value)
    digest = hashlib.sha256(fastjson.dumps_bytes(value)).digest()
    with _VERDICTS_LOCK:
        known = _VERDICTS.get(digest, _UNKNOWN)
        if known is not _UNKNOWN:
            _VERDICTS.move_to_end(digest)
    if known is _UNKNOWN:
        known = _problem(value)
        with _VERDICTS_LOCK:
            _VERDICTS[digest] = known
            while len(_VERDICTS) > _VERDICTS_KEPT:
                _VERDICTS.popitem(last=False)
    if known is not None:
        raise ValueError(known)
    return value


def _problem(value: Any) -> str | None:
    """What makes `value` no valid JSON Schema, where (None: nothing)."""
    metaschema = value.get("$schema") if isinstance(value, dict) else None
    if metaschema is not None and not isinstance(metaschema, str):
        return "not a valid JSON schema at $schema: a metaschema's URI, as a string"
    for where, ref in _outside(value):
        return (
            f"not a valid JSON schema at {where}: {ref[:200]!r} refers outside the schema (to"
            " its own parts only, and the standard metaschemas: nothing is fetched)"
        )
    validator = jsonschema.validators.validator_for(value)
    try:
        validator.check_schema(value, format_checker=_formats_but_regex(validator))
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        return f"not a valid JSON schema at {where}: {exc.message}"
    except (OverflowError, TypeError, AttributeError) as exc:
        # What the metaschema's own checks raise past their error, which names no place.
        return f"not a valid JSON schema: {exc}"
    for where, pattern in _patterns(value):
        # Validation matches with `regex`, bounded; the metaschema's `regex` format is `re`'s.
        try:
            compile_bounded(pattern)
        except (PatternTooCostly, regex.error) as exc:
            return f"not a valid JSON schema at {where}: {exc}"
    if (unsupported := _unsupported(value)) is not None:
        return unsupported
    if applies_itself(value):
        return f"not a valid JSON schema: {ENDLESS}"
    return None


@functools.cache
def _formats_but_regex(validator: type[Any]) -> jsonschema.FormatChecker:
    """The metaschema's format checks but `regex`'s: that one compiles with `re`, which knows
    no `\\p{L}` and bounds no compiling, where validation matches with `regex` (`_problem`
    checks each pattern as validation compiles it)."""
    metaschema = jsonschema.validators.validator_for(validator.META_SCHEMA, default=validator)
    formats = jsonschema.FormatChecker(formats=())
    formats.checkers = {
        name: check for name, check in metaschema.FORMAT_CHECKER.checkers.items() if name != "regex"
    }
    return formats


def subschema_count(schema: Any) -> int:
    """How many schemas `schema` holds, itself included: each is checked against the
    metaschema on its own (about half a millisecond each, in jsonschema), so this, not the
    schema's size, is what checking it costs (32 KB of `{}`s take 4 s, of typical properties
    under 1 s). Booleans count as the schemas they may be; counted high, never low."""
    count = 0
    for _, _, place in schema_places(schema):
        count += 1
        for value in place.values():
            items = list(value.values()) if isinstance(value, dict) else value
            if isinstance(items, list):
                count += sum(isinstance(item, bool) for item in items)
            else:
                count += isinstance(items, bool)
    return count


MAX_SCHEMA_DEPTH = 64  # levels of objects and arrays: checking and validating recurse per level
MAX_SCHEMA_BYTES = 32 * 1024
# Checking a schema against its metaschema takes about half a millisecond a schema it holds:
# no schema worth its use holds more than this (a tool's arguments hold some tens).
MAX_SUBSCHEMAS = 2_000
_VERDICTS: OrderedDict[bytes, str | None] = OrderedDict()  # by the digest of a schema's text
_VERDICTS_KEPT = 4096
_VERDICTS_LOCK = threading.Lock()
_UNKNOWN = object()


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # (attrs)


# A tenant's `$ref` is never fetched: jsonschema's own registry would read any URL, a
# `file://` one included, with no timeout (a schema's error then quoted what it read). The
# standard metaschemas are known without fetching.
_NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(
    retrieve=_refuse_retrieval  # type: ignore[call-arg]  # (an attrs field mypy does not see)
)
_KNOWN = frozenset(uri.rstrip("#") for uri in SPECIFICATIONS)


def _patterns(schema: Any) -> Iterator[tuple[str, str]]:
    """Each regular expression of a schema (`pattern`, `patternProperties`' names), with
    where it is."""
    for where, _, place in schema_places(schema):
        at = f"{where}/" if where else ""
        if isinstance(place.get("pattern"), str):
            yield f"{at}pattern", place["pattern"]
        if isinstance(place.get("patternProperties"), dict):
            yield from ((f"{at}patternProperties", name) for name in place["patternProperties"])


def _outside(schema: Any) -> Iterator[tuple[str, str]]:
    """Each reference that names no resource of the schema itself (its root, a part with an
    `$id` of its own) nor a standard metaschema: one validation would have to fetch."""
    places = list(schema_places(schema))
    own = {base for _, base, _ in places}
    for where, base, place in places:
        for keyword in REFERENCES:
            ref = place.get(keyword)
            if isinstance(ref, str):
                document = urljoin(base, ref).partition("#")[0]
                if document not in own and document not in _KNOWN:
                    yield where or "(root)", ref


# Validation with tenants' schemas: their `pattern`s run on text a model wrote, so a pattern
# that backtracks for ever must not hold the process. jsonschema matches with `re`, which has
# no time limit (and holds the interpreter); these keywords match with `regex` and a timeout.
PATTERN_SECONDS = 0.5
_T = TypeVar("_T")


class SchemaTooCostly(ValueError):
    """A validation went past its time (a pattern past PATTERN_SECONDS on one value, or all of
    it past the check's budget, utils.check_budget), or its schema refers to itself without end
    (`ENDLESS`) or is not supported (`_unsupported`): a schema saved before these were refused."""


ENDLESS = "the schema refers to itself without end"


def _unsupported(schema: Any) -> str | None:
    """What validation cannot do with `schema`: `unevaluatedProperties` beside
    `patternProperties` (anywhere in it), jsonschema matching those patterns its own way, with
    `re` and no time limit."""
    text = json.dumps(schema)
    if '"unevaluatedProperties"' in text and '"patternProperties"' in text:
        return "unevaluatedProperties with patternProperties is not supported"
    return None


def first_error(validator: Any, instance: Any) -> ValidationError | None:
    """The first way `instance` fails the validator's schema, if any, within the budget."""
    return _within_budget(lambda: next(iter(validator.iter_errors(instance)), None))


def all_errors(validator: Any, instance: Any) -> list[ValidationError]:
    """Every way `instance` fails the validator's schema, within the budget."""
    return _within_budget(lambda: list(validator.iter_errors(instance)))


def _within_budget(validate: Callable[[], _T]) -> _T:
    with one_budget():
        try:
            return validate()
        except RecursionError:
            raise SchemaTooCostly(ENDLESS) from None


def _remaining() -> float:
    """Seconds the next keyword or pattern may take: PATTERN_SECONDS, or what is left of the
    check's budget."""
    try:
        return seconds_left(PATTERN_SECONDS)
    except OutOfTime as exc:
        raise SchemaTooCostly(f"validating {exc}") from None


def _timed(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def timed(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _remaining()
        return keyword(validator, value, instance, schema)

    return timed


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _comparable(item)
        if key in seen:
            yield ValidationError("the array has non-unique elements")
            return
        seen.add(key)


def _comparable(value: Any) -> Any:
    """A hashable form equal for JSON-equal values (1 and 1.0 alike, true and 1 apart)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_comparable(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _comparable(item)) for key, item in value.items()))
    return ("text", value)


def _search(pattern: str, text: str) -> bool:
    seconds = _remaining()
    try:
        return compile_bounded(pattern).search(text, timeout=seconds) is not None
    except TimeoutError:
        raise SchemaTooCostly(
            f"the schema's pattern {pattern[:100]!r} took longer than {seconds:.2g} s"
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
    """A validator of `schema` whose keywords keep to the budget of `first_error` and
    `all_errors` (validate through those); `unevaluatedProperties` beside
    `patternProperties` is refused, its matching being jsonschema's own."""
    if (unsupported := _unsupported(schema)) is not None:
        raise SchemaTooCostly(unsupported)
    base = jsonschema.validators.validator_for(schema)
    bounded = _BOUNDED.get(base)
    if bounded is None:
        own = {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
            "uniqueItems": _unique_items,
        }
        keywords = {**base.VALIDATORS, **own}
        bounded = _BOUNDED[base] = jsonschema.validators.extend(
            base, {name: _timed(keyword) for name, keyword in keywords.items()}
        )
    return bounded(schema, registry=_NO_RETRIEVAL)
