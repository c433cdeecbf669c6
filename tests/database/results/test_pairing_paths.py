"""Two runs of one version are paired by position from their rows, aggregated in numpy; any
other pair by key, in SQL. On the same rows both must give the same cases, in the same order,
with the same figures: repetitions (errored ones left out), NULL latencies, costs and tokens,
cases missing on either side, and cases whose test was deleted. And when a position names
different tests in the two runs, the runs are paired by key."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

from database.core import Database, Tenant
from database.results.crud import pairing
from database.results.crud.case_columns import PairedColumns
from database.results.crud.pinned_versions import slices_and_changes
from database.results.models import Run
from tests.helpers import Account, create_run_body, register

CASES = 60
REPETITIONS = 3
METRICS = (("contains", "contains"), ("relevance", "answer-relevance"))

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT id, :organization, :run, position, repetition, test_id, '{}'::jsonb, 'answer', status,
       latency, input_tokens, output_tokens, cost, false
FROM unnest(CAST(:ids AS UUID[]), CAST(:positions AS INT[]), CAST(:repetitions AS INT[]),
            CAST(:test_ids AS UUID[]), CAST(:statuses AS TEXT[]), CAST(:latencies AS FLOAT8[]),
            CAST(:input_tokens AS INT[]), CAST(:output_tokens AS INT[]),
            CAST(:costs AS FLOAT8[]))
    AS r(id, position, repetition, test_id, status, latency, input_tokens, output_tokens, cost)
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed, error)
SELECT gen_random_uuid(), :organization, result_id, :run, r.position, name, kind, score,
       passed, error
FROM unnest(CAST(:result_ids AS UUID[]), CAST(:names AS TEXT[]), CAST(:kinds AS TEXT[]),
            CAST(:scores AS FLOAT8[]), CAST(:passes AS BOOLEAN[]), CAST(:errors AS TEXT[]))
    AS e(result_id, name, kind, score, passed, error)
JOIN results r ON r.id = e.result_id
""")


def _maybe(rng: random.Random, value: Any, share: float = 0.15) -> Any:
    return None if rng.random() < share else value


async def _write(
    database: Database,
    owner: Account,
    run: str,
    test_ids: Sequence[str | None],
    missing: int,
    rng: random.Random,
) -> dict[tuple[int, str], list[tuple[float, bool, bool]]]:
    """A run's results (every `missing`-th case has none) and evaluations; per (position,
    metric), the evaluations written: (score, passed, errored)."""
    rows: dict[str, list[Any]] = {
        key: []
        for key in (
            "ids",
            "positions",
            "repetitions",
            "test_ids",
            "statuses",
            "latencies",
            "input_tokens",
            "output_tokens",
            "costs",
        )
    }
    evaluations: dict[str, list[Any]] = {
        key: [] for key in ("result_ids", "names", "kinds", "scores", "passes", "errors")
    }
    written: dict[tuple[int, str], list[tuple[float, bool, bool]]] = {}
    for position, test_id in enumerate(test_ids):
        if position % missing == missing // 2:
            continue
        for repetition in range(REPETITIONS):
            result = uuid.uuid4()
            roll = rng.random()
            status = "errored" if roll < 0.1 else "passed" if roll < 0.6 else "failed"
            # Whole numbers and eighths: sums exact in any order, so that SQL's means (in
            # whatever order it adds) and numpy's are the same floats.
            values = (
                result,
                position,
                repetition,
                test_id,
                status,
                _maybe(rng, float(rng.randint(40, 400))),
                _maybe(rng, rng.randint(0, 20)),
                _maybe(rng, rng.randint(10, 50)),
                _maybe(rng, rng.randint(1, 16) / 8),
            )
            for key, value in zip(rows, values, strict=True):
                rows[key].append(value)
            if status == "errored":
                continue
            for name, kind in METRICS:
                errored = rng.random() < 0.1
                score = float(status == "passed") if name == "contains" else rng.randint(0, 8) / 8
                for key, value in zip(
                    evaluations,
                    (result, name, kind, score, score >= 0.5, "judge failed" if errored else None),
                    strict=True,
                ):
                    evaluations[key].append(value)
                written.setdefault((position, name), []).append((score, score >= 0.5, errored))
    async with database.transaction(Tenant(owner.organization_id)) as session:
        params = {"organization": owner.organization_id, "run": uuid.UUID(run)}
        await session.execute(_RESULTS, {**params, **rows})
        await session.execute(_EVALUATIONS, {**params, **evaluations})
    return written


async def _setup(
    client: httpx.AsyncClient, owner: Account, runs: int
) -> tuple[list[str], list[str]]:
    test_ids, body = await create_run_body(
        client,
        owner,
        [{"input": f"question {i}", "behavior": f"b{i % 3}"} for i in range(CASES)],
    )
    ids = []
    for _ in range(runs):
        run = await client.post(
            "/api/v1/runs", json={**body, "repetitions": REPETITIONS}, headers=owner.headers
        )
        assert run.status_code == 202, run.text
        ids.append(run.json()["id"])
    return test_ids, ids


def _assert_same(found: PairedColumns, expected: PairedColumns) -> None:
    every = np.arange(len(expected))
    assert len(found) == len(expected)
    assert found.ids.keys(every) == expected.ids.keys(every)
    assert found.ids.test_ids(every) == expected.ids.test_ids(every)
    for side in ("baseline", "candidate"):
        ours, theirs = getattr(found, side), getattr(expected, side)
        for name in ("scored", "passed", "errored", "latency", "cost", "position", "present"):
            assert np.array_equal(getattr(ours, name), getattr(theirs, name), equal_nan=True)
        # SQL's mean of integers is a numeric rounded to 16 or more digits, then a float8.
        assert np.allclose(ours.tokens, theirs.tokens, rtol=1e-15, atol=0, equal_nan=True)
    assert found.slices == expected.slices
    assert np.array_equal(found.changed, expected.changed)
    assert found.cases(every) == expected.cases(every)


async def _paired(database: Database, owner: Account, baseline: str, candidate: str) -> Any:
    """Both ways of pairing the two runs, and the metrics."""
    async with database.transaction(Tenant(owner.organization_id)) as session:
        base = await session.get(Run, uuid.UUID(baseline))
        cand = await session.get(Run, uuid.UUID(candidate))
        assert base is not None and cand is not None
        async with pairing.whole_run_plans(session):
            by_position = await pairing._by_position(session, base, cand)
            cases = await pairing.paired_cases(session, base, cand)
            by_key = await pairing._by_key(session, base, cand)
            sides = (by_key.baseline, by_key.candidate)
            slices, changed = await slices_and_changes(session, base, cand, sides)
            metrics = await pairing.paired_metrics(session, base, cand)
    keyed = PairedColumns(by_key, by_key.baseline, by_key.candidate, slices, changed)
    return by_position, cases, keyed, metrics


async def test_pairing_by_position_matches_pairing_by_key(client, database):
    owner = await register(client)
    test_ids, (baseline, candidate) = await _setup(client, owner, runs=2)
    rng = random.Random(5)
    # Every 17th test deleted: its results name none, and key by position.
    named: list[str | None] = [None if i % 17 == 2 else t for i, t in enumerate(test_ids)]
    written = {
        "baseline": await _write(database, owner, baseline, named, missing=7, rng=rng),
        "candidate": await _write(database, owner, candidate, named, missing=9, rng=rng),
    }

    by_position, cases, keyed, metrics = await _paired(database, owner, baseline, candidate)
    assert by_position is not None
    _assert_same(cases, keyed)
    every = np.arange(len(cases))
    both_missing = [p for p in range(CASES) if p % 7 == 3 and p % 9 == 4]
    assert len(cases) == CASES - len(both_missing) and both_missing
    assert cases.ids.keys(every)[2] == "position:2"
    assert not cases.baseline.present[3] and not cases.candidate.present[4]
    assert (cases.baseline.scored + cases.baseline.errored)[0] == REPETITIONS

    # The metrics, per case, against the evaluations as written.
    assert sorted(metrics) == ["contains", "relevance"]
    assert metrics["contains"].type == "contains"
    for side, side_written in written.items():
        for name, _ in METRICS:
            found = getattr(metrics[name], side)
            assert found.binary == (name == "contains")
            positions = sorted(p for p, metric in side_written if metric == name)
            assert found.positions.tolist() == positions
            for i, position in enumerate(positions):
                rows = side_written[position, name]
                scored = [(score, passed) for score, passed, errored in rows if not errored]
                assert found.scored[i] == len(scored)
                assert found.passed[i] == sum(passed for _, passed in scored)
                mean = sum(score for score, _ in scored) / len(scored) if scored else math.nan
                assert np.array_equal(found.score[i], mean, equal_nan=True)


async def test_a_position_naming_other_tests_pairs_by_key(client, database):
    owner = await register(client)
    test_ids, (baseline, candidate) = await _setup(client, owner, runs=2)
    rng = random.Random(6)
    await _write(database, owner, baseline, test_ids, missing=1000, rng=rng)
    swapped = list(test_ids)
    swapped[5], swapped[6] = swapped[6], swapped[5]
    await _write(database, owner, candidate, swapped, missing=1000, rng=rng)

    by_position, cases, keyed, _ = await _paired(database, owner, baseline, candidate)
    assert by_position is None
    _assert_same(cases, keyed)
    # Paired by test: position 5 of the baseline with position 6 of the candidate.
    i = cases.ids.keys(np.arange(len(cases))).index(test_ids[5])
    assert (cases.baseline.position[i], cases.candidate.position[i]) == (5, 6)
