"""Comparing two runs: 10,000 cases, 2 metrics, 3 repetitions each (30,000 results and 60,000
evaluations a run), end to end through GET /runs/{id}/compare (goal: under 1 s).

The runs' results are written straight into the database (the engine's speed is
run_throughput's business); the candidate is made a few points worse. Baseline, measured
alongside: one pass of SQL reading what the comparison reads, the floor of any comparison
computed next to the data."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import text

from bench.harness import StolenTime, bench_app
from database.core import Tenant, get_database
from database.results.crud.pairing import whole_run_plans

CASES = 10_000
REPETITIONS = 3
REPEATS = 5
PASSWORD = "bench-password-1"

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT gen_random_uuid(), :organization, :run, v.position, rep, v.test_id, '{}'::jsonb,
       'answer ' || v.position,
       CASE WHEN random() < :pass_share - (v.position % 10) * 0.02 THEN 'passed' ELSE 'failed' END,
       40 + random() * 120, 20, 30, 0.00005, false
FROM test_set_version_cases v, generate_series(0, :repetitions - 1) AS rep
WHERE v.version_id = :version
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed)
SELECT gen_random_uuid(), r.organization_id, r.id, r.run_id, r.position, m.name, m.type,
       CASE WHEN m.type = 'contains' THEN (r.status = 'passed')::int ELSE s.score END,
       CASE WHEN m.type = 'contains' THEN r.status = 'passed' ELSE s.score >= 0.3 END
FROM results r,
     (VALUES ('contains', 'contains'), ('relevance', 'answer-relevance')) AS m(name, type),
     LATERAL (SELECT CASE WHEN r.status = 'passed' THEN 0.5 + random() * 0.5
                          ELSE random() * 0.6 END AS score) AS s
WHERE r.run_id = :run
""")
_FINISH = text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run")
# What a comparison has to read, once: both runs' results and evaluations (each carries its
# result's case), aggregated per case.
_FLOOR = text("""
SELECT run_id, position, count(*), sum((status = 'passed')::int), NULL
FROM results WHERE run_id IN (:a, :b) GROUP BY 1, 2
UNION ALL
SELECT run_id, position, count(*), NULL, avg(score)
FROM evaluations WHERE run_id IN (:a, :b) GROUP BY 1, 2
""")


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    registered = await client.post(
        "/api/v1/auth/register",
        json={"email": "compare@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
    project = (await client.post("/api/v1/projects", json={"name": "compare"})).json()
    ids: list[str] = []
    for start in range(0, CASES, 1000):
        cases = [{"input": f"case {i}"} for i in range(start, min(CASES, start + 1000))]
        created = await client.post(
            "/api/v1/tests/bulk", json={"project_id": project["id"], "tests": cases}
        )
        ids += created.json()["ids"]
    test_set = await client.post(
        "/api/v1/test-sets", json={"project_id": project["id"], "name": "compare", "test_ids": ids}
    )
    model = await client.post("/api/v1/models", json={"name": "demo", "provider": "demo"})
    metric = await client.post(  # a run needs one; the results below are written directly
        "/api/v1/metrics",
        json={
            "project_id": project["id"],
            "name": "any",
            "type": "word-count",
            "parameters": {"min": 0},
        },
    )
    return {
        "metric": metric.json()["id"],
        "organization": uuid.UUID(registered.json()["organization"]["id"]),
        "test_set": test_set.json()["id"],
        "model": model.json()["id"],
    }


async def _run(client: httpx.AsyncClient, setup: dict[str, Any], pass_share: float) -> str:
    """A run, created through the API (no worker picks it up here), its results written in."""
    created = await client.post(
        "/api/v1/runs",
        json={
            "test_set_id": setup["test_set"],
            "target_model_id": setup["model"],
            "metric_ids": [setup["metric"]],
            "repetitions": REPETITIONS,
        },
    )
    run = created.json()
    async with get_database().transaction(Tenant(setup["organization"])) as session:
        params = {"organization": setup["organization"], "run": uuid.UUID(run["id"])}
        await session.execute(
            _RESULTS,
            {
                **params,
                "version": uuid.UUID(run["test_set_version_id"]),
                "repetitions": REPETITIONS,
                "pass_share": pass_share,
            },
        )
        await session.execute(_EVALUATIONS, {"run": params["run"]})
        await session.execute(_FINISH, {"run": params["run"]})
    return str(run["id"])


async def run() -> None:
    stolen = StolenTime()
    async with bench_app(bcrypt_rounds=4) as client:
        setup = await _setup(client)
        baseline = await _run(client, setup, 0.85)
        candidate = await _run(client, setup, 0.82)
        path = f"/api/v1/runs/{candidate}/compare"

        async def compare() -> dict[str, Any]:
            response = await client.get(path, params={"baseline": baseline})
            assert response.status_code == 200, response.text
            return dict(response.json())

        async def floor() -> None:
            async with get_database().transaction(Tenant(setup["organization"])) as session:
                ids = {"a": uuid.UUID(baseline), "b": uuid.UUID(candidate)}
                # The plans the comparison asks for: before autovacuum has analysed the fresh
                # rows, the planner would join them row by row (minutes, not milliseconds).
                async with whole_run_plans(session):
                    (await session.execute(_FLOOR, ids)).all()

        found = await compare()  # warm-up
        await floor()
        compare_times, floor_times = [], []
        with stolen.measure():
            for _ in range(REPEATS):
                started = time.perf_counter()
                await compare()
                compare_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                await floor()
                floor_times.append(time.perf_counter() - started)
    median, floor_median = statistics.median(compare_times), statistics.median(floor_times)
    print(
        f"run comparison ({CASES:,} cases x {REPETITIONS} repetitions, 2 metrics a run;"
        f" median of {REPEATS}, range in brackets)"
    )
    print(
        f"  GET /runs/{{id}}/compare: {median * 1000:.0f} ms"
        f"  [{min(compare_times) * 1000:.0f}-{max(compare_times) * 1000:.0f}]  (goal < 1,000 ms)"
        f"  verdict {found['verdict']}, {found['method']['resamples']} resamples,"
        f" Holm families {found['method']['families']}"
    )
    print(
        f"  baseline, one SQL pass reading both runs per case: {floor_median * 1000:.0f} ms;"
        f" the comparison takes {median / floor_median:.1f}x it"
    )
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")
