"""Run rows sent as packed columns, and one metric's evaluations aggregated per case from
them: the numpy side of what pairing.py reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- one run's rows, sent as packed columns -------------------------------------------------
# Each figure of a run's rows comes as one bytea of big-endian values (PostgreSQL's binary send
# format), read here without a Python object per value: decoding 100,000s of values per array
# cost more than the query. A row's flags: its status (0 failed, 1 passed, 2 errored) and
# which of its fields are NULL.
ERRORED, PASSED = 2, 1
LATENCY_NULL, COST_NULL, TOKENS_NULL, TEST_NULL = 4, 8, 16, 32


def packed(data: bytes | None, dtype: str) -> np.ndarray:
    return np.frombuffer(data or b"", dtype=dtype)


def sums(group: np.ndarray, size: int, weights: np.ndarray) -> np.ndarray:
    # (bincount adds each bin's weights in row order, as PostgreSQL's sum does.)
    return np.bincount(group, weights=weights, minlength=size)


def means(group: np.ndarray, size: int, values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Per group, the mean of the kept values (NaN where none is kept): avg() FILTER."""
    total = sums(group[kept], size, values[kept])
    count = np.bincount(group[kept], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


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
            scored=sums(group, size, scored.astype(float)),
            passed=sums(group, size, (found == PASSED).astype(float)),
            score=means(group, size, score, scored),
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
    # Whether a higher score is the better one, by the rule both runs froze (None: no
    # direction, the rule is == or the runs' rules disagree).
    higher_passes: bool | None = True
