"""Two runs' cases side by side, as columns (one array per figure, in comparison order):
what pairing.py reads, in the shape the statistics take. Objects per case only where a few
are wanted (the flips)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from database.results.crud.packed_columns import (
    COST_NULL,
    ERRORED,
    LATENCY_NULL,
    PASSED,
    TEST_NULL,
    TOKENS_NULL,
    means,
    packed,
    sums,
)
from database.test_sets.slice_index import SLICES


class Side(NamedTuple):
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


class PairedCase:
    """One case of a comparison, its fields read from the columns when first asked: the flips
    take one per case whose share moved (10,000s in a run of 100,000), but want the ids and
    repetitions of a page of them only."""

    __slots__ = ("_at", "_columns", "_shares")

    def __init__(
        self, columns: PairedColumns, at: int, shares: tuple[float | None, float | None]
    ) -> None:
        self._columns, self._at, self._shares = columns, at, shares

    def share(self, side: str) -> float | None:
        """The share of passing repetitions on one side ("baseline" or "candidate")."""
        return self._shares[("baseline", "candidate").index(side)]

    @property
    def key(self) -> str:
        return self._columns.ids.keys(np.array([self._at]))[0]

    @property
    def test_id(self) -> uuid.UUID | None:
        return self._columns.test_id(self._at)

    @property
    def baseline(self) -> Side | None:
        return self._columns.baseline.sides(np.array([self._at]))[0]

    @property
    def candidate(self) -> Side | None:
        return self._columns.candidate.sides(np.array([self._at]))[0]

    @property
    def positions(self) -> tuple[int | None, int | None]:
        """The case's position in the baseline and in the candidate (None: no result there)."""
        sides = (self._columns.baseline, self._columns.candidate)
        base, cand = (int(side.position[self._at]) for side in sides)
        return (base if base >= 0 else None, cand if cand >= 0 else None)

    @property
    def behavior(self) -> str | None:
        return self._columns.slices.value("behavior", self._at)

    @property
    def category(self) -> str | None:
        return self._columns.slices.value("category", self._at)

    @property
    def topic(self) -> str | None:
        return self._columns.slices.value("topic", self._at)

    @property
    def changed(self) -> bool:
        return bool(self._columns.changed[self._at])

    def fields(self) -> tuple[Any, ...]:
        slices = (self._columns.slices.value(field, self._at) for field in SLICES)
        return (self.key, self.test_id, self.baseline, self.candidate, *slices, self.changed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PairedCase) and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())

    def __repr__(self) -> str:
        return f"PairedCase{self.fields()!r}"


class CaseIds(Protocol):
    """Cases' keys and test ids, made for the cases asked for only."""

    def __len__(self) -> int: ...

    def keys(self, which: np.ndarray) -> list[str]: ...

    def test_ids(self, which: np.ndarray) -> list[uuid.UUID | None]: ...


def floats(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float)  # (None becomes NaN)


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
    def of(cls, columns: Sequence[Sequence[Any] | np.ndarray]) -> SideColumns:
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
        counts = [
            np.nan_to_num(getattr(self, name)[cases]).astype(np.int64).tolist()
            for name in ("scored", "passed", "errored")
        ]
        figures = [_optional(getattr(self, name)[cases]) for name in ("latency", "cost", "tokens")]
        present = self.present[cases].tolist()
        return [
            Side(scored, passed, errored, latency, cost, tokens) if found else None
            for found, scored, passed, errored, latency, cost, tokens in zip(
                present, *counts, *figures, strict=True
            )
        ]


def _optional(values: np.ndarray) -> list[float | None]:
    found = values.astype(object)
    found[np.isnan(values)] = None
    return found.tolist()


@dataclass(frozen=True)
class PairedRuns:
    """Every case of either run, in comparison order, as the runs' rows give them (before
    their versions' cases are read)."""

    ids: CaseIds
    baseline: SideColumns
    candidate: SideColumns
    same_version: bool


@dataclass(frozen=True)
class PairedColumns:
    """Every case of either run, in comparison order, as columns."""

    ids: CaseIds
    baseline: SideColumns
    candidate: SideColumns
    slices: CaseSlices
    changed: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def test_id(self, i: int) -> uuid.UUID | None:
        return self.ids.test_ids(np.array([i]))[0]

    def cases(self, which: np.ndarray) -> list[PairedCase]:
        """The given cases, one object each (for the few that need one: the flips)."""
        shares = [_optional(side.share[which]) for side in (self.baseline, self.candidate)]
        return [
            PairedCase(self, at, pair)
            for at, pair in zip(which.tolist(), zip(*shares, strict=True), strict=True)
        ]


@dataclass(frozen=True, eq=False)
class CaseSlices:
    """Each case's behavior, category and topic, as codes: per field its distinct values, and
    each case's index among them."""

    values: dict[str, list[str | None]]
    codes: dict[str, np.ndarray]

    def value(self, field: str, at: int) -> str | None:
        return self.values[field][self.codes[field][at]]

    def listed(self, field: str) -> list[str | None]:
        """Each case's value of one field."""
        return list(map(self.values[field].__getitem__, self.codes[field].tolist()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaseSlices) and all(
            self.listed(field) == other.listed(field) for field in SLICES
        )


@dataclass(frozen=True)
class RunCases:
    """One run's results aggregated per case (position), as the per-case SQL would: counts of
    scored, passing and errored repetitions, and means over the scored ones."""

    positions: np.ndarray  # ascending
    figures: dict[str, np.ndarray]  # scored, passed, errored, latency, cost, tokens
    test_ids: np.ndarray  # (cases, 16) bytes
    has_test: np.ndarray
    consistent: bool  # every case's repetitions name the same test (or none)

    @classmethod
    def of(cls, row: Sequence[Any] | None) -> RunCases:
        """From the packed columns of a run's rows in (position, repetition) order."""
        position_data, flag_data, latency, cost, tokens, tests = row or (None,) * 6
        position = packed(position_data, ">i4").astype(np.int64)
        flags = packed(flag_data, ">i2")
        starts = np.r_[True, position[1:] != position[:-1]][: len(position)]
        first, group = np.flatnonzero(starts), np.cumsum(starts) - 1
        size = len(first)
        status = flags & 3
        scored = status != ERRORED
        test_ids = packed(tests, "u1").reshape(-1, 16)
        has_test = (flags & TEST_NULL) == 0
        # A case is one position; were its repetitions to name different tests, the key
        # (the test) would split it: the caller then pairs by key instead.
        consistent = bool(
            (has_test == has_test[first][group]).all()
            and (test_ids == test_ids[first][group]).all()
        )
        return cls(
            positions=position[first],
            figures={
                "scored": sums(group, size, scored.astype(float)),
                "passed": sums(group, size, (status == PASSED).astype(float)),
                "errored": sums(group, size, (status == ERRORED).astype(float)),
                "latency": means(
                    group, size, packed(latency, ">f8"), scored & (flags & LATENCY_NULL == 0)
                ),
                "cost": means(group, size, packed(cost, ">f8"), scored & (flags & COST_NULL == 0)),
                "tokens": means(
                    group,
                    size,
                    packed(tokens, ">i8").astype(float),
                    scored & (flags & TOKENS_NULL == 0),
                ),
            },
            test_ids=test_ids[first],
            has_test=has_test[first],
            consistent=consistent,
        )

    def side(self, cases: np.ndarray) -> tuple[SideColumns, np.ndarray]:
        """This run's columns over the given positions (ascending, a superset of its own), NaN
        where it has no result; and where it has one."""
        found = np.isin(cases, self.positions, assume_unique=True)
        columns = []
        for name in ("scored", "passed", "errored", "latency", "cost", "tokens"):
            column = np.full(len(cases), np.nan)
            column[found] = self.figures[name]
            columns.append(column)
        columns.append(np.where(found, cases, np.nan))
        return SideColumns.of(columns), found


@dataclass(frozen=True)
class ByPosition:
    """Two runs of one version paired by position, in position order."""

    positions: np.ndarray
    baseline: SideColumns
    candidate: SideColumns
    tests: np.ndarray  # (cases, 16) bytes: the candidate's test id, else the baseline's
    has_test: np.ndarray

    @classmethod
    def pair(cls, baseline: RunCases, candidate: RunCases) -> ByPosition | None:
        """None when a position does not name one test in both runs (pair those by key)."""
        if not (baseline.consistent and candidate.consistent):
            return None
        cases = (
            baseline.positions
            if np.array_equal(baseline.positions, candidate.positions)
            else np.union1d(baseline.positions, candidate.positions)
        )
        before, in_before = baseline.side(cases)
        after, in_after = candidate.side(cases)
        both_before = np.isin(baseline.positions, candidate.positions, assume_unique=True)
        both_after = np.isin(candidate.positions, baseline.positions, assume_unique=True)
        if not (
            (baseline.has_test[both_before] == candidate.has_test[both_after]).all()
            and (baseline.test_ids[both_before] == candidate.test_ids[both_after]).all()
        ):
            return None
        test_ids = np.zeros((len(cases), 16), dtype=np.uint8)
        has_test = np.zeros(len(cases), dtype=bool)
        for run, found in ((baseline, in_before), (candidate, in_after)):
            test_ids[found], has_test[found] = run.test_ids, run.has_test
        return cls(cases, before, after, test_ids, has_test)

    def __len__(self) -> int:
        return len(self.positions)

    def test_ids(self, which: np.ndarray) -> list[uuid.UUID | None]:
        return [uuid.UUID(found) if found else None for found in self._test_id_texts(which)]

    def keys(self, which: np.ndarray) -> list[str]:
        """As pairing's SQL keys a case of one version: its test, else its position."""
        return [
            found or f"position:{position}"
            for found, position in zip(
                self._test_id_texts(which), self.positions[which].tolist(), strict=True
            )
        ]

    def _test_id_texts(self, which: np.ndarray) -> list[str | None]:
        digits = self.tests[which].tobytes().hex()
        return [
            f"{digits[at : at + 8]}-{digits[at + 8 : at + 12]}-{digits[at + 12 : at + 16]}-"
            f"{digits[at + 16 : at + 20]}-{digits[at + 20 : at + 32]}"
            if has
            else None
            for at, has in zip(
                range(0, len(digits), 32), self.has_test[which].tolist(), strict=True
            )
        ]
