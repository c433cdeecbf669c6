"""Base classes for request and response schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    field_validator,
)


class InputModel(BaseModel):
    """Request bodies: unknown fields are refused, surrounding whitespace trimmed, and a
    number is finite (the text "inf" or "nan" would pass a bound such as `gt=0`, then be
    stored as JSON null)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        """PostgreSQL stores UTF-8 text without NUL: refuse anything else here, naming the
        field, rather than failing at the database (a lone surrogate such as "\\ud800" is valid
        JSON but no UTF-8)."""
        return storable(value)


def example(fields: dict[str, Any]) -> ConfigDict:
    """A request body's example, shown with every operation that takes it (a test checks that
    each example is valid)."""
    return ConfigDict(json_schema_extra={"examples": [fields]})


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")
# The largest value a PostgreSQL `integer` column holds: a larger one fails in the database,
# naming no field.
MAX_INT4 = 2**31 - 1
NAME_MAX_LENGTH = 200
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=NAME_MAX_LENGTH, strip_whitespace=True)
]


def text_problem(value: Any) -> str | None:
    """What makes a value's text (or moment) unstorable (in keys and items too), or None.
    Walked with a stack of its own: a body nested a thousand deep is refused for its depth,
    not a 500."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if problem := _string_problem(item):
                return problem
        elif isinstance(item, datetime):
            if problem := _moment_problem(item):
                return problem
        elif isinstance(item, dict):
            pending.extend(reversed([part for pair in item.items() for part in pair]))
        elif isinstance(item, list | tuple):
            pending.extend(reversed(item))
    return None


def nesting_depth(value: Any, limit: int) -> int:
    """How many objects and lists nest in `value`, walked with a stack of its own (counting
    stops a level past `limit`: deeper is refused whatever the rest holds)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > limit:
                break
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return deepest


def storable(value: Any) -> Any:
    """A validator refusing what `text_problem` finds, for values outside an `InputModel`
    (form fields): `Annotated[str, Form(), AfterValidator(storable)]`."""
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


Storable = AfterValidator(storable)


def _moment_problem(value: datetime) -> str | None:
    """A moment is stored in UTC: one whose offset takes it past the years 1 to 9999 there
    (`9999-12-31T23:00:00-14:00`) cannot be."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        return "must fall within the years 1 to 9999 in UTC"
    return None


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text (it has a lone surrogate, such as \\ud800)"
    return None


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total the list holds."""

    items: list[T]
    total: int
    limit: int
    offset: int


def _not_true_or_false(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a whole number, not true or false")
    return value


# A whole number as a client sends one: JSON's true and false are not 1 and 0 (a number sent
# as text, "2", is read as before).
WholeNumber = Annotated[int, BeforeValidator(_not_true_or_false)]
