"""A run's reads in an organization with many runs, half of them made since the planner's
statistics were last gathered (a CI pipeline's day, in a history the statistics know): the run
itself, its comparison with another (its flips too), summary, results, cases, export and a
stream's replay of its events each handle rows in proportion to the runs read, never to all of
the organization's, which row-level security's predicate on the organization could have them
walk. (tests/migrations/test_indexes.py holds the indexes that keep them so in the catalog.)"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import text

from database.core import Database, Tenant
from database.results import events
from tests.helpers import Account, create_run_body
from tests.planner import analyze, rows_handled, statements

RUNS = 40
CASES = 100
# The two runs' rows (results, and two evaluations each) read a few times over; the
# organization holds twenty times as many.
LINEAR = 5 * 2 * CASES * 3

_ROWS = text("""
WITH written AS (
    INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input,
                         output, status, latency_ms, input_tokens, output_tokens, cost, cached)
    SELECT gen_random_uuid(), :organization, :run, position, 0, test_id, '{}'::jsonb, 'answer',
           CASE WHEN (position + :seed) % 3 = 0 THEN 'failed' ELSE 'passed' END,
           50 + position, 10, 20, 0.001, false
    FROM unnest(CAST(:test_ids AS UUID[])) WITH ORDINALITY AS t(test_id, ordinal),
         LATERAL (SELECT CAST(ordinal AS INT) - 1 AS position) p
    RETURNING id, position, status
)
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed)
SELECT gen_random_uuid(), :organization, written.id, :run, written.position, metric.name,
       metric.name,
       CAST(written.status = 'passed' AS INT), written.status = 'passed'
FROM written, (VALUES ('contains'), ('exact-match')) AS metric(name)
""")
_FINISH = text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run")
# Each result's `result.recorded` event, a reference to it, as the writer stores it.
_EVENTS = text("""
INSERT INTO run_events (run_id, seq, organization_id, type, data)
SELECT run_id, position + 1, organization_id, 'result.recorded', jsonb_build_object('result_id', id)
FROM results WHERE run_id = :run
""")


async def test_a_runs_reads_handle_its_rows_not_the_organizations(
    committed_database: Database,
    committed_client: httpx.AsyncClient,
    committed_owner: Account,
    owner_engine: Any,
    runtime_engine: Any,
):
    tenant = Tenant(committed_owner.organization_id)
    tests = [{"input": f"question {i}", "category": f"c{i % 4}"} for i in range(CASES)]
    test_ids, body = await create_run_body(committed_client, committed_owner, tests)
    runs = []
    for seed in range(RUNS):
        created = await committed_client.post(
            "/api/v1/runs", json=body, headers=committed_owner.headers
        )
        assert created.status_code == 202, created.text
        run = uuid.UUID(created.json()["id"])
        async with committed_database.transaction(tenant) as session:
            params = {"organization": committed_owner.organization_id, "run": run, "seed": seed}
            await session.execute(_ROWS, {**params, "test_ids": [uuid.UUID(t) for t in test_ids]})
            await session.execute(_EVENTS, {"run": run})
            await session.execute(_FINISH, {"run": run})
        runs.append(run)
        if seed == RUNS // 2 - 1:  # the statistics know the first half, not the second
            await analyze(owner_engine, "results", "evaluations", "run_events", "runs")

    with statements(runtime_engine) as seen:
        response = await committed_client.get(
            f"/api/v1/runs/{runs[-1]}/compare",
            params={"baseline": str(runs[-2])},
            headers=committed_owner.headers,
        )
        for read in ("", "/summary", "/results", "/cases", "/export?format=csv"):
            found = await committed_client.get(
                f"/api/v1/runs/{runs[-1]}{read}", headers=committed_owner.headers
            )
            assert found.status_code == 200, found.text
        async with committed_database.transaction(tenant) as session:  # a stream's replay
            replayed = await events.read_after(session, runs[-1], 0, limit=2 * CASES)
    assert len(replayed) == CASES and all("status" in event.data for event in replayed)
    assert response.status_code == 200, response.text
    compared = response.json()
    assert compared["cases"]["paired"] == CASES
    assert {metric["name"] for metric in compared["metrics"]} == {"contains", "exact-match"}
    shown = compared["flips"]["items"]
    assert shown and all(flip["baseline"] and flip["candidate"] for flip in shown)

    async with committed_database.transaction(tenant) as session:
        reads = await rows_handled(
            session, seen, "results", "evaluations", "run_events", "test_set_version_cases"
        )
    assert len(reads) >= 4  # the cases, the slices, the metrics, the flips' outputs, ...
    assert any("DISTINCT ON (r.position)" in sql for _, sql in reads)  # the flips' outputs
    for handled, sql in reads:
        assert handled <= LINEAR, f"{handled} rows: {sql}"
