"""Base classes for request and response schemas."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator


class InputModel(BaseModel):
    """Request bodies: unknown fields are refused, surrounding whitespace trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """PostgreSQL cannot store NUL in text or JSON: refuse it here, naming the field."""
        if _has_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


def example(fields: dict[str, Any]) -> ConfigDict:
    """A request body's example, shown with every operation that takes it (a test checks that
    each example is valid)."""
    return ConfigDict(json_schema_extra={"examples": [fields]})


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total the list holds."""

    items: list[T]
    total: int
    limit: int
    offset: int
