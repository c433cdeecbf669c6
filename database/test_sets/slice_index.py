"""A version's slices: each case's behavior, category and topic, kept with the version as
codes when it is published (a version never changes). A comparison groups every case by them:
reading them out of 100,000 cases' JSON and coding them took a quarter of its time
(migration 0027_version_slices)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SLICES = ("behavior", "category", "topic")
_CODE = ">i4"  # as PostgreSQL's int4send writes it (the migration's backfill)


class SliceIndex:
    """Fed a version's cases a page at a time, in position order: per slice its distinct
    values, in the order first met, and each case's value as its index among them."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str | None, int]] = {field: {} for field in SLICES}
        self._codes = {field: array("i") for field in SLICES}

    def add(self, cases: Sequence[dict[str, Any]]) -> None:
        for field in SLICES:
            values, codes = self._values[field], self._codes[field]
            for case in cases:
                value = case.get(field)
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"a case's {field} is text or none, not {type(value)}")
                codes.append(values.setdefault(value, len(values)))

    def values(self) -> dict[str, list[str | None]]:
        return {field: list(self._values[field]) for field in SLICES}

    def codes(self) -> bytes:
        """The codes, one slice after the other, each in position order."""
        return b"".join(
            np.asarray(self._codes[field], dtype=np.int32).astype(_CODE).tobytes()
            for field in SLICES
        )


@dataclass(frozen=True)
class VersionSlices:
    """A version's slices as read back: per slice its values and each position's code."""

    values: dict[str, list[str | None]]
    codes: dict[str, np.ndarray]  # position -> index in values

    @classmethod
    def of(
        cls, values: dict[str, list[str | None]], codes: bytes, case_count: int
    ) -> VersionSlices:
        matrix = np.frombuffer(codes, dtype=_CODE).astype(np.int64)
        if matrix.shape[0] != len(SLICES) * case_count:
            raise ValueError(f"{matrix.shape[0]} slice codes for {case_count} cases")
        matrix = matrix.reshape(len(SLICES), case_count)
        return cls(values, {field: matrix[at] for at, field in enumerate(SLICES)})
