"""Text and JSON as PostgreSQL can store them."""

from __future__ import annotations

from typing import Any


def storable(text: str) -> str:
    """PostgreSQL cannot store NUL in text or JSONB: one in a model's answer must not sink the
    batch it is written with."""
    return text.replace("\x00", "\ufffd")


def storable_json(value: Any) -> Any:
    """`value` with NUL replaced in every string of it, keys included (a model's tool call
    arguments, a simulated user's message: whatever a model wrote)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(item) for item in value]
    return value
