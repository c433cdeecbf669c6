"""Base classes for request and response schemas."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator


class InputModel(BaseModel):
    """Request bodies: unknown fields are refused, surrounding whitespace trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        """PostgreSQL stores UTF-8 text without NUL: refuse anything else here, naming the
        field, rather than failing at the database (a lone surrogate such as "\\ud800" is valid
        JSON but no UTF-8)."""
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def example(fields: dict[str, Any]) -> ConfigDict:
    """A request body's example, shown with every operation that takes it (a test checks that
    each example is valid)."""
    return ConfigDict(json_schema_extra={"examples": [fields]})


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


def text_problem(value: Any) -> str | None:
    """What makes a value's text unstorable (in keys and items too), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL (\\u0000) characters"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "must be valid Unicode text (it has a lone surrogate, such as \\ud800)"
        return None
    if isinstance(value, dict):
        items = (item for pair in value.items() for item in pair)
        return next(filter(None, map(text_problem, items)), None)
    if isinstance(value, list | tuple):
        return next(filter(None, map(text_problem, value)), None)
    return None


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total the list holds."""

    items: list[T]
    total: int
    limit: int
    offset: int
