"""Text as PostgreSQL can store it."""

from __future__ import annotations


def storable(text: str) -> str:
    """PostgreSQL cannot store NUL in text or JSONB: one in a model's answer must not sink the
    batch it is written with."""
    return text.replace("\x00", "\ufffd")
