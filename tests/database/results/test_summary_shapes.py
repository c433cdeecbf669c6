"""A run of one result per case is summarised by queries that read its results and evaluations
as its cases (no grouping, no join to find a case): their figures are the per-case queries'
figures, read of the same rows. The summary reads its metrics on a second connection (as the
comparison does): what it gives is what one connection reads."""

from __future__ import annotations

import dataclasses
import random
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from database.core import Database, Tenant
from database.results.crud import figures
from database.results.models import Run
from database.results.summaries import summary
from tests.helpers import Account, create_run_body, statements_sent

CASES = 240

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT id, :organization, :run, position, 0, test_id, '{}'::jsonb, 'answer', status,
       40 + position, 10, 20, 0.001, false
FROM unnest(CAST(:ids AS UUID[]), CAST(:positions AS INT[]), CAST(:test_ids AS UUID[]),
            CAST(:statuses AS TEXT[])) AS r(id, position, test_id, status)
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed, error, cost)
SELECT gen_random_uuid(), :organization, result_id, :run, r.position, name, kind, score,
       passed, error, e.cost
FROM unnest(CAST(:result_ids AS UUID[]), CAST(:names AS TEXT[]), CAST(:kinds AS TEXT[]),
            CAST(:scores AS FLOAT8[]), CAST(:passed AS BOOLEAN[]), CAST(:errors AS TEXT[]),
            CAST(:costs AS FLOAT8[])) AS e(result_id, name, kind, score, passed, error, cost)
JOIN results r ON r.id = e.result_id
""")
_FINISH = text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run")


async def _single_run(
    client: httpx.AsyncClient, database: Database, owner: Account, seed: int
) -> uuid.UUID:
    """A completed run of one repetition: results passed, failed or errored; a judge's
    evaluations scored, failed at a threshold, or errored, with their cost."""
    tests = [
        {"input": f"question {i}", "behavior": f"b{i % 3}", "category": f"c{i % 5}"}
        for i in range(CASES)
    ]
    test_ids, body = await create_run_body(client, owner, tests)
    created = await client.post("/api/v1/runs", json=body, headers=owner.headers)
    assert created.status_code == 202, created.text
    run = uuid.UUID(created.json()["id"])
    rng = random.Random(seed)
    results: dict[str, list[Any]] = {"ids": [], "positions": [], "test_ids": [], "statuses": []}
    evaluations: dict[str, list[Any]] = {
        key: [] for key in ("result_ids", "names", "kinds", "scores", "passed", "errors", "costs")
    }
    for position, test_id in enumerate(test_ids):
        result, status = uuid.uuid4(), rng.choice(("passed", "passed", "failed", "errored"))
        for key, value in zip(results, (result, position, test_id, status), strict=True):
            results[key].append(value)
        if status == "errored":
            continue
        score = rng.randint(0, 8) / 8
        error = "the judge timed out" if rng.random() < 0.1 else None
        for name, kind, value, passed, failure, cost in (
            ("contains", "contains", float(status == "passed"), status == "passed", None, None),
            ("relevance", "answer-relevance", score, score >= 0.5, error, rng.random() / 100),
        ):
            row = (result, name, kind, value, passed, failure, cost)
            for key, item in zip(evaluations, row, strict=True):
                evaluations[key].append(item)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        params = {"organization": owner.organization_id, "run": run}
        await session.execute(_RESULTS, {**params, **results})
        await session.execute(_EVALUATIONS, {**params, **evaluations})
        await session.execute(_FINISH, {"run": run})
    return run


async def _figures(database: Database, owner: Account, run_id: uuid.UUID, *, grouped: bool):
    """The run's pass rate, slices and metrics, read as cases of one result or grouped per
    case (as a run of repetitions is)."""
    async with database.transaction(Tenant(owner.organization_id)) as session:
        run = await session.get(Run, run_id)
        assert run is not None and run.repetitions == 1
        if grouped:
            run.repetitions = 2  # (in this object only: the transaction writes nothing)
        rate = await figures.pass_rate(session, run)
        slices = await figures.slices(session, run)
        metrics = await figures.metrics(session, run)
        await session.rollback()
    return rate, slices, metrics


def _close(single: Any, grouped: Any) -> None:
    """Equal, floats to 1e-9 (the same values summed in another order)."""
    if dataclasses.is_dataclass(single) and dataclasses.is_dataclass(grouped):
        _close(dataclasses.asdict(single), dataclasses.asdict(grouped))  # type: ignore[arg-type]
    elif isinstance(single, float) and isinstance(grouped, float):
        assert single == pytest.approx(grouped, rel=1e-9, abs=1e-12)
    elif isinstance(single, dict):
        assert single.keys() == grouped.keys()
        for key in single:
            _close(single[key], grouped[key])
    elif isinstance(single, list | tuple):
        assert len(single) == len(grouped)
        for mine, theirs in zip(single, grouped, strict=True):
            _close(mine, theirs)
    else:
        assert single == grouped


async def test_one_result_per_case_reads_the_per_case_figures_without_grouping(
    committed_database: Database, committed_client: httpx.AsyncClient, committed_owner: Account
):
    run = await _single_run(committed_client, committed_database, committed_owner, seed=3)
    with statements_sent(committed_database) as sent:
        single = await _figures(committed_database, committed_owner, run, grouped=False)
    grouped = await _figures(committed_database, committed_owner, run, grouped=True)
    _close(single, grouped)
    # What the figures say, against the rows written (not only against each other).
    rate, slices, metrics = single
    assert rate[1] > 0 and rate[2] == CASES
    assert {value for value, *_ in slices["behavior"]} == {"b0", "b1", "b2"}
    assert [value for value, *_ in slices["topic"]] == [None]
    relevance = next(m for m in metrics if m.name == "relevance")
    assert relevance.errored > 0 and relevance.cost is not None and relevance.cost > 0
    assert relevance.evaluated + relevance.errored == CASES - rate[1]
    # Read as cases of one result: nothing grouped by case (the results by position, the
    # evaluations by their results' positions), no evaluation joined to its result.
    figure_reads = [s for s in sent if "FROM results" in s or "FROM evaluations" in s]
    assert len(figure_reads) == 3
    assert not any("GROUP BY position" in s or "JOIN results" in s for s in figure_reads)
    assert not any("e.position" in s for s in figure_reads)


async def test_a_summary_read_beside_is_the_one_read_on_one_connection(
    committed_database: Database, committed_client: httpx.AsyncClient, committed_owner: Account
):
    run_id = await _single_run(committed_client, committed_database, committed_owner, seed=4)

    async def summarised(*, written: bool) -> dict[str, Any]:
        async with committed_database.transaction(Tenant(committed_owner.organization_id)) as s:
            if written:  # (a transaction id, as a write gives it: no side reader is used)
                await s.execute(text("SELECT pg_current_xact_id()"))
            run = await s.get(Run, run_id)
            assert run is not None
            return (await summary(s, run)).model_dump(mode="json")

    beside, alone = await summarised(written=False), await summarised(written=True)
    assert beside == alone
    assert [m["name"] for m in alone["metrics"]] == ["contains", "relevance"]
    response = await committed_client.get(
        f"/api/v1/runs/{run_id}/summary", headers=committed_owner.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == beside
