"""Two runs' cases side by side, as columns (one array per figure, in comparison order):
what pairing.py reads, in the shape the statistics take. Objects per case only where a few
are wanted (the flips)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np


# Named tuples, not dataclasses: the flips take one per case whose share moved (10,000s in a
# run of 100,000), and a frozen dataclass costs several times as much to make.
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


class PairedCase(NamedTuple):
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
class PairedColumns:
    """Every case of either run, in comparison order, as columns."""

    ids: CaseIds
    baseline: SideColumns
    candidate: SideColumns
    slices: dict[str, list[str | None]]  # behavior, category, topic: each case's value
    changed: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def test_id(self, i: int) -> uuid.UUID | None:
        return self.ids.test_ids(np.array([i]))[0]

    def cases(self, which: np.ndarray) -> list[PairedCase]:
        """The given cases, one object each (for the few that need one: the flips)."""
        at = which.tolist()
        slices = [
            [self.slices[field][i] for i in at] for field in ("behavior", "category", "topic")
        ]
        return [
            PairedCase(*fields)
            for fields in zip(
                self.ids.keys(which),
                self.ids.test_ids(which),
                self.baseline.sides(which),
                self.candidate.sides(which),
                *slices,
                self.changed[which].tolist(),
                strict=True,
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

    @classmethod
    def of(cls, positions: bytes | None, flags: bytes | None, scores: bytes | None) -> MetricSide:
        """From the packed columns of a metric's evaluations in one run (any order): each
        evaluation's case (position), flags (as a result's status: errored when it has an
        error) and score; aggregated per case as the per-case SQL would."""
        cases, group = np.unique(packed(positions, ">i4"), return_inverse=True)
        found, score = packed(flags, ">i2"), packed(scores, ">f8")
        size, scored = len(cases), found != ERRORED
        return cls(
            positions=cases.astype(np.int64),
            scored=_sums(group, size, scored.astype(float)),
            passed=_sums(group, size, (found == PASSED).astype(float)),
            score=_means(group, size, score, scored),
            binary=bool(((score == 0) | (score == 1))[scored].all()),
        )

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


# --- one run's rows, sent as packed columns -------------------------------------------------
# Each figure of a run's rows comes as one bytea of big-endian values (PostgreSQL's binary send
# format), read here without a Python object per value: decoding 100,000s of values per array
# cost more than the query. A row's flags: its status (0 failed, 1 passed, 2 errored) and
# which of its fields are NULL.
ERRORED, PASSED = 2, 1
LATENCY_NULL, COST_NULL, TOKENS_NULL, TEST_NULL = 4, 8, 16, 32


def packed(data: bytes | None, dtype: str) -> np.ndarray:
    return np.frombuffer(data or b"", dtype=dtype)


def _sums(group: np.ndarray, size: int, weights: np.ndarray) -> np.ndarray:
    # (bincount adds each bin's weights in row order, as PostgreSQL's sum does.)
    return np.bincount(group, weights=weights, minlength=size)


def _means(group: np.ndarray, size: int, values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per group, the mean of the kept values (NaN where none is kept): avg() FILTER."""
    total = _sums(group[kept], size, values[kept])
    count = np.bincount(group[kept], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


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
                "scored": _sums(group, size, scored.astype(float)),
                "passed": _sums(group, size, (status == PASSED).astype(float)),
                "errored": _sums(group, size, (status == ERRORED).astype(float)),
                "latency": _means(
                    group, size, packed(latency, ">f8"), scored & (flags & LATENCY_NULL == 0)
                ),
                "cost": _means(group, size, packed(cost, ">f8"), scored & (flags & COST_NULL == 0)),
                "tokens": _means(
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
