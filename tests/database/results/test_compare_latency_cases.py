"""A comparison's latency quantiles are taken over the cases it compares. They start as soon as
the runs' rows are read when no test can have changed between the runs; across versions, a
changed test's case is left out of them too, unless changed tests are included."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

from database.core import Database, Tenant
from database.results.comparison import CompareOptions, compare
from database.results.models import Run
from tests.helpers import Account, create_run_body

CASES = 20

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, cached)
SELECT gen_random_uuid(), :organization, :run, position, 0, test_id, '{}'::jsonb, 'answer',
       'passed', latency, false
FROM unnest(CAST(:positions AS INT[]), CAST(:test_ids AS UUID[]), CAST(:latencies AS FLOAT8[]))
    AS r(position, test_id, latency)
""")
_FINISH = text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run")


async def _finished_run(
    client: httpx.AsyncClient,
    database: Database,
    owner: Account,
    body: dict[str, Any],
    test_ids: list[str],
    latencies: list[float],
) -> uuid.UUID:
    created = await client.post("/api/v1/runs", json=body, headers=owner.headers)
    assert created.status_code == 202, created.text
    run = uuid.UUID(created.json()["id"])
    async with database.transaction(Tenant(owner.organization_id)) as session:
        params = {
            "organization": owner.organization_id,
            "run": run,
            "positions": list(range(len(test_ids))),
            "test_ids": [uuid.UUID(test) for test in test_ids],
            "latencies": latencies,
        }
        await session.execute(_RESULTS, params)
        await session.execute(_FINISH, {"run": run})
    return run


async def _compare(
    database: Database,
    owner: Account,
    baseline_id: uuid.UUID,
    candidate_id: uuid.UUID,
    **options: Any,
) -> dict[str, Any]:
    async with database.transaction(Tenant(owner.organization_id)) as session:
        baseline, candidate = (
            await session.get(Run, baseline_id),
            await session.get(Run, candidate_id),
        )
        assert baseline is not None and candidate is not None
        found = await compare(session, candidate, baseline, CompareOptions(**options))
    return found.model_dump(mode="json")


def _median(values: list[float]) -> float:
    return float(np.quantile(values, 0.5, method="inverted_cdf"))


async def test_latency_is_taken_over_the_compared_cases(
    committed_database: Database, committed_client: httpx.AsyncClient, committed_owner: Account
) -> None:
    test_ids, body = await create_run_body(
        committed_client, committed_owner, [{"input": f"question {i}"} for i in range(CASES)]
    )
    # The first case is the fastest of the candidate's: its median moves with it or without it.
    baseline_latencies = [100.0] * CASES
    candidate_latencies = [1.0] + [101.0 + i for i in range(1, CASES)]
    baseline = await _finished_run(
        committed_client, committed_database, committed_owner, body, test_ids, baseline_latencies
    )
    same = await _finished_run(
        committed_client, committed_database, committed_owner, body, test_ids, candidate_latencies
    )
    edited = await committed_client.patch(
        f"/api/v1/tests/{test_ids[0]}", json={"input": "edited"}, headers=committed_owner.headers
    )
    assert edited.status_code == 200, edited.text
    changed = await _finished_run(
        committed_client, committed_database, committed_owner, body, test_ids, candidate_latencies
    )

    # One version: every case is compared, the first with them.
    found = await _compare(committed_database, committed_owner, baseline, same)
    assert found["cases"]["paired"] == CASES
    assert found["latency_p50_ms"]["candidate"] == _median(candidate_latencies)
    assert found["latency_p50_ms"]["baseline"] == 100.0

    # Across versions, the changed test's case is left out of the latency too...
    found = await _compare(committed_database, committed_owner, baseline, changed)
    assert found["cases"]["paired"] == CASES - 1 and found["cases"]["changed"] == 1
    assert found["latency_p50_ms"]["candidate"] == _median(candidate_latencies[1:])
    assert _median(candidate_latencies[1:]) != _median(candidate_latencies)

    # ... unless changed tests are included.
    found = await _compare(
        committed_database, committed_owner, baseline, changed, include_changed=True
    )
    assert found["cases"]["paired"] == CASES
    assert found["latency_p50_ms"]["candidate"] == _median(candidate_latencies)
