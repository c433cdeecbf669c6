"""Two runs' cases side by side, as columns (one array per figure, in comparison order):
what pairing.py reads, in the shape the statistics take. Objects per case only where a few
are wanted (the flips)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Side:
    """One run's repetitions of one case."""

    scored: int
    passed: int
    errored: int
    latency: float | None
    cost: float | None
    tokens: float | None

    @property
    def share(self) -> float | None:
        return self.passed / self.scored if self.scored else None


@dataclass(frozen=True, slots=True)
class PairedCase:
    key: str
    test_id: uuid.UUID | None
    baseline: Side | None
    candidate: Side | None
    behavior: str | None
    category: str | None
    topic: str | None
    changed: bool

    def share(self, side: str) -> float | None:
        """The share of passing repetitions on one side ("baseline" or "candidate")."""
        found: Side | None = getattr(self, side)
        return found.share if found is not None else None


def floats(values: Sequence[Any]) -> np.ndarray:
    return np.array(values, dtype=float)  # (None becomes NaN)


@dataclass(frozen=True)
class SideColumns:
    """One run's repetitions of every case, as columns; NaN (position -1) where the run has
    no result of the case."""

    scored: np.ndarray
    passed: np.ndarray
    errored: np.ndarray
    latency: np.ndarray
    cost: np.ndarray
    tokens: np.ndarray
    position: np.ndarray
    present: np.ndarray

    @classmethod
    def of(cls, columns: Sequence[Sequence[Any]]) -> SideColumns:
        scored, passed, errored, latency, cost, tokens, position = map(floats, columns)
        return cls(
            scored=scored,
            passed=passed,
            errored=errored,
            latency=latency,
            cost=cost,
            tokens=tokens,
            position=np.nan_to_num(position, nan=-1).astype(np.int64),
            present=~np.isnan(position),
        )

    @property
    def share(self) -> np.ndarray:
        """Each case's share of passing repetitions; NaN where none was scored."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.scored > 0, self.passed / self.scored, np.nan)

    def sides(self, cases: np.ndarray) -> list[Side | None]:
        """The given cases' repetitions, one object each."""
        columns = [
            getattr(self, name)[cases].tolist()
            for name in ("present", "scored", "passed", "errored", "latency", "cost", "tokens")
        ]
        return [
            Side(int(scored), int(passed), int(errored), *map(_optional, figures))
            if present
            else None
            for present, scored, passed, errored, *figures in zip(*columns, strict=True)
        ]


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class PairedColumns:
    """Every case of either run, in comparison order, as columns."""

    keys: list[str]
    test_ids: list[str | None]
    baseline: SideColumns
    candidate: SideColumns
    slices: dict[str, list[str | None]]  # behavior, category, topic: each case's value
    changed: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def test_id(self, i: int) -> uuid.UUID | None:
        found = self.test_ids[i]
        return uuid.UUID(found) if found else None

    def cases(self, which: np.ndarray) -> list[PairedCase]:
        """The given cases, one object each (for the few that need one: the flips)."""
        return [
            PairedCase(
                key=self.keys[i],
                test_id=self.test_id(i),
                baseline=baseline,
                candidate=candidate,
                behavior=self.slices["behavior"][i],
                category=self.slices["category"][i],
                topic=self.slices["topic"][i],
                changed=bool(self.changed[i]),
            )
            for i, baseline, candidate in zip(
                which.tolist(), self.baseline.sides(which), self.candidate.sides(which), strict=True
            )
        ]


@dataclass(frozen=True)
class MetricSide:
    """One metric's evaluations in one run, as columns over the positions it scored."""

    positions: np.ndarray
    scored: np.ndarray
    passed: np.ndarray
    score: np.ndarray  # NaN where nothing was scored
    binary: bool  # every score 0 or 1

    def column(self, case_of_position: np.ndarray, size: int, *, graded: bool) -> np.ndarray:
        """Per case (`case_of_position` maps this run's positions to case indices, -1 for a
        case left out), its mean score (graded) or share of passing evaluations; NaN where the
        metric scored nothing."""
        values = np.full(size, np.nan)
        inside = self.positions < len(case_of_position)
        where = np.full(len(self.positions), -1, dtype=np.int64)
        where[inside] = case_of_position[self.positions[inside]]
        found = (where >= 0) & (self.scored > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            own = self.score if graded else self.passed / self.scored
        values[where[found]] = own[found]
        return values


@dataclass
class MetricPairs:
    type: str | None
    baseline: MetricSide | None = None
    candidate: MetricSide | None = None
