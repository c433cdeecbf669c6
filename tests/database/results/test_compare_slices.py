"""A comparison's slices and flips from the columns: slice values read back exactly (control
characters, backslashes, none), from the candidate's version else the baseline's, grouped and
ordered as the comparison promises; and each flip's outputs found by its position in each
run, the same as a join on the key itself, for results whose test was deleted too, in one
version or two."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Collection
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

from database.core import Database, Tenant
from database.results.crud import flip_outputs, pairing
from database.results.models import Run
from tests.helpers import Account, create_run_body, register

CASES = 40
REPETITIONS = 2
BEHAVIORS = ("a\x1fb", "back\\slash\\s", "\\", None, "s")

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT gen_random_uuid(), :organization, :run, position, repetition, test_id, '{}'::jsonb,
       'answer ' || position || '/' || repetition, status, 50, 10, 20, 0.001, false
FROM unnest(CAST(:positions AS INT[]), CAST(:repetitions AS INT[]), CAST(:test_ids AS UUID[]),
            CAST(:statuses AS TEXT[])) AS r(position, repetition, test_id, status)
""")
# The flips' outputs as a join on the key (pairing._KEY) finds them: the reference.
_BY_KEY = text(f"""
WITH wanted AS (
    SELECT * FROM unnest(CAST(:keys AS TEXT[]), CAST(:baseline_passes AS BOOLEAN[]))
        AS w(key, baseline_passes)
)
SELECT DISTINCT ON (r.run_id, w.key) r.run_id = :candidate, w.key, r.id
FROM results r JOIN wanted w ON {pairing._KEY} = w.key
WHERE r.run_id IN (:baseline, :candidate) AND r.status <> 'errored'
ORDER BY r.run_id, w.key,
         ((r.status = 'passed') = (w.baseline_passes = (r.run_id = :baseline))) DESC,
         r.repetition
""")


def _behavior(position: int) -> str | None:
    return BEHAVIORS[position % len(BEHAVIORS)]


async def _setup(client: httpx.AsyncClient, owner: Account) -> tuple[list[str], dict[str, Any]]:
    tests = []
    for i in range(CASES):
        test: dict[str, Any] = {"input": f"question {i}", "category": f"c{i % 2}"}
        if _behavior(i) is not None:
            test["behavior"] = _behavior(i)
        tests.append(test)
    return await create_run_body(client, owner, tests)


async def _run(client: httpx.AsyncClient, owner: Account, body: dict[str, Any]) -> str:
    created = await client.post(
        "/api/v1/runs", json={**body, "repetitions": REPETITIONS}, headers=owner.headers
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


async def _write(
    database: Database,
    owner: Account,
    run: str,
    test_ids: list[str | None],
    seed: int,
    missing: Collection[int] = (),
) -> None:
    """The run's results, a test at each position (but the `missing` positions)."""
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {"positions": [], "repetitions": [], "test_ids": []}
    rows["statuses"] = []
    for position, test_id in enumerate(test_ids):
        if position in missing:
            continue
        for repetition in range(REPETITIONS):
            status = rng.choice(("passed", "failed", "failed", "errored"))
            for key, value in zip(rows, (position, repetition, test_id, status), strict=True):
                rows[key].append(value)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        params = {"organization": owner.organization_id, "run": uuid.UUID(run)}
        await session.execute(_RESULTS, {**params, **rows})
        await session.execute(
            text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run"),
            {"run": uuid.UUID(run)},
        )


async def test_slice_values_come_back_exactly_and_group_in_order(client, database):
    owner = await register(client)
    test_ids, body = await _setup(client, owner)
    runs = [await _run(client, owner, body) for _ in range(2)]
    for seed, run in enumerate(runs):
        await _write(database, owner, run, list(test_ids), seed)

    async with database.transaction(Tenant(owner.organization_id)) as session:
        base = await session.get(Run, uuid.UUID(runs[0]))
        cand = await session.get(Run, uuid.UUID(runs[1]))
        assert base is not None and cand is not None
        async with pairing.whole_run_plans(session):
            cases = await pairing.paired_cases(session, base, cand)
    positions = cases.candidate.position.tolist()
    assert cases.slices.listed("behavior") == [_behavior(p) for p in positions]
    assert cases.slices.listed("category") == [f"c{p % 2}" for p in positions]
    assert cases.slices.listed("topic") == [None] * CASES

    response = await client.get(
        f"/api/v1/runs/{runs[1]}/compare", params={"baseline": runs[0]}, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    shares = cases.baseline.share, cases.candidate.share
    rated = [p for p in range(CASES) if not np.isnan(shares[0][p] + shares[1][p])]
    expected = Counter(_behavior(positions[i]) for i in rated)
    behaviors = [
        (s["value"], s["pass_rate"]["cases"]) for s in body["slices"] if s["field"] == "behavior"
    ]
    assert sorted(behaviors, key=str) == sorted(expected.items(), key=str)
    assert behaviors == sorted(behaviors, key=lambda pair: (-pair[1], pair[0] or ""))
    assert {s["field"] for s in body["slices"]} == {"behavior", "category"}  # one topic: none


async def _flips_both_ways(
    database: Database, owner: Account, runs: tuple[str, str]
) -> tuple[dict[Any, Any], dict[Any, Any], list[str]]:
    async with database.transaction(Tenant(owner.organization_id)) as session:
        base = await session.get(Run, uuid.UUID(runs[0]))
        cand = await session.get(Run, uuid.UUID(runs[1]))
        assert base is not None and cand is not None
        async with pairing.whole_run_plans(session):
            cases = await pairing.paired_cases(session, base, cand)
        flips = [
            flip_outputs.Flipped(case.key, i % 2 == 0, *case.positions)
            for i, case in enumerate(cases.cases(np.arange(len(cases))))
        ]
        keys = [flip.key for flip in flips]
        found = await flip_outputs.flip_outputs(session, base, cand, flips)
        params = {
            **pairing.run_params(base, cand),
            "keys": keys,
            "baseline_passes": [flip.baseline_passes for flip in flips],
        }
        rows = (await session.execute(_BY_KEY, params)).all()
    reference = {(key, bool(is_candidate)): result for is_candidate, key, result in rows}
    return {key: output.result_id for key, output in found.items()}, reference, keys


async def test_flip_outputs_are_found_by_key_in_one_version_and_in_two(client, database):
    owner = await register(client)
    test_ids, body = await _setup(client, owner)
    first = await _run(client, owner, body)
    second = await _run(client, owner, body)
    # Every 7th result names no test (deleted): keyed by position in one version.
    named: list[str | None] = [None if i % 7 == 3 else t for i, t in enumerate(test_ids)]
    await _write(database, owner, first, named, seed=1)
    await _write(database, owner, second, named, seed=2)
    found, reference, keys = await _flips_both_ways(database, owner, (first, second))
    assert found == reference and len(found) > CASES
    assert "position:3" in keys

    # A test edited: the next run pins another version, and a deleted test's results key by
    # their run and position. Its results take the tests in reverse order, so that a case's
    # position differs between the two runs.
    edited = await client.patch(
        f"/api/v1/tests/{test_ids[0]}", json={"input": "edited"}, headers=owner.headers
    )
    assert edited.status_code == 200, edited.text
    third = await _run(client, owner, body)
    await _write(database, owner, third, named[::-1], seed=3)
    found, reference, keys = await _flips_both_ways(database, owner, (first, third))
    assert found == reference and len(found) > CASES
    assert f"{third}:{CASES - 4}" in keys and f"{first}:3" in keys


async def test_a_case_takes_its_slices_from_the_candidates_version_else_the_baselines(
    client, database
):
    owner = await register(client)
    test_ids, body = await _setup(client, owner)
    first = await _run(client, owner, body)
    # The next version: three tests' behavior renamed, one test out of the set.
    for test_id in test_ids[:3]:
        edited = await client.patch(
            f"/api/v1/tests/{test_id}", json={"behavior": "renamed"}, headers=owner.headers
        )
        assert edited.status_code == 200, edited.text
    removed = await client.delete(
        f"/api/v1/test-sets/{body['test_set_id']}/tests/{test_ids[5]}", headers=owner.headers
    )
    assert removed.status_code == 204, removed.text
    second = await _run(client, owner, body)
    named: list[str | None] = list(test_ids)
    await _write(database, owner, first, named, seed=1)
    await _write(database, owner, second, named[:5] + named[6:], seed=2)

    async with database.transaction(Tenant(owner.organization_id)) as session:
        base = await session.get(Run, uuid.UUID(first))
        cand = await session.get(Run, uuid.UUID(second))
        assert base is not None and cand is not None
        assert base.test_set_version_id != cand.test_set_version_id
        async with pairing.whole_run_plans(session):
            cases = await pairing.paired_cases(session, base, cand)
    every = np.arange(len(cases))
    behaviors = dict(zip(cases.ids.test_ids(every), cases.slices.listed("behavior"), strict=True))
    expected = {
        uuid.UUID(test_id): "renamed" if i < 3 else _behavior(i)
        for i, test_id in enumerate(test_ids)
    }
    assert behaviors == expected  # the removed test's from the baseline's version
    assert cases.changed.sum() == 0  # what is sent and expected did not change


async def test_a_case_of_the_baseline_run_only_takes_its_versions_slices(client, database):
    owner = await register(client)
    test_ids, body = await _setup(client, owner)
    runs = [await _run(client, owner, body) for _ in range(2)]
    await _write(database, owner, runs[0], list(test_ids), seed=1)
    await _write(database, owner, runs[1], list(test_ids), seed=2, missing={0, 2})

    async with database.transaction(Tenant(owner.organization_id)) as session:
        base = await session.get(Run, uuid.UUID(runs[0]))
        cand = await session.get(Run, uuid.UUID(runs[1]))
        assert base is not None and cand is not None
        assert base.test_set_version_id == cand.test_set_version_id
        async with pairing.whole_run_plans(session):
            cases = await pairing.paired_cases(session, base, cand)
    every = np.arange(len(cases))
    assert not cases.candidate.present[0] and not cases.candidate.present[2]
    behaviors = dict(zip(cases.ids.test_ids(every), cases.slices.listed("behavior"), strict=True))
    assert behaviors == {uuid.UUID(test_id): _behavior(i) for i, test_id in enumerate(test_ids)}
    assert _behavior(0) is not None and _behavior(2) is not None
