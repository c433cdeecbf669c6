"""A run exported right after it ends, before the planner's statistics know its rows (autovacuum
analyses them up to a minute later): every page must still be read by the run's keyset index
and its evaluations by their result's, not by reading the whole run (or all the organization's
evaluations) again for each page, which made a 100,000-result export's database time grow with
the square of the results."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from database.core import Database, Tenant
from database.results.export import result_rows
from database.test_sets.streaming import PAGE_ROWS
from tests.database.results.test_export_stream import _run
from tests.helpers import register, remove_account
from tests.planner import analyze, rows_handled, statements

CASES, REPETITIONS = 1000, 3
# A page read by its keys handles its own rows a few times over (the index, the running sum of
# their sizes, the limit, the page's byte budget; the page's evaluations). Reading the whole
# run for a page handles its 3,000 results twice or more (the scan, the sort).
LINEAR = 5 * PAGE_ROWS

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, cached)
SELECT gen_random_uuid(), :organization, :run, p, rep,
       (CAST(:tests AS uuid[]))[p + 1],
       jsonb_build_object('text', 'question ' || p), 'answer ' || p,
       CASE WHEN p % 10 = 0 THEN 'failed' ELSE 'passed' END, 40 + p % 7, false
FROM generate_series(0, :cases - 1) AS p, generate_series(0, :repetitions - 1) AS rep
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed, reason)
SELECT gen_random_uuid(), r.organization_id, r.id, r.run_id, r.position, m.name, 'contains',
       (r.status = 'passed')::int, r.status = 'passed', 'judged'
FROM results r, (VALUES ('Zeta contains'), ('alpha relevance')) AS m(name)
WHERE r.run_id = :run
""")


async def _write(
    database: Database,
    organization: uuid.UUID,
    run: dict[str, Any],
    cases: int,
    repetitions: int,
) -> None:
    parameters = {
        "organization": organization,
        "run": uuid.UUID(run["id"]),
        "tests": run["test_ids"],
        "cases": cases,
        "repetitions": repetitions,
    }
    async with database.transaction(Tenant(organization)) as session:
        await session.execute(_RESULTS, parameters)
        await session.execute(_EVALUATIONS, {"run": parameters["run"]})


@pytest.fixture
async def known_run(committed_database, app, owner_engine) -> AsyncIterator[None]:
    """Another organization's run, committed and analysed: the statistics a run made since
    meets until autovacuum analyses its rows (one run's results, none of the new run's)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as http:
        other = await register(http)
        run = await _run(http, other, cases=200, repetitions=1)
        await _write(committed_database, other.organization_id, run, 200, 1)
    try:
        await analyze(owner_engine, "results", "evaluations")
        yield
    finally:
        await remove_account(owner_engine, other)


async def test_each_page_of_a_fresh_run_is_read_by_its_keys(
    known_run, client, database, runtime_engine
):
    owner = await register(client)
    run = await _run(client, owner, cases=CASES, repetitions=REPETITIONS)
    await _write(database, owner.organization_id, run, CASES, REPETITIONS)

    read = result_rows(uuid.UUID(run["id"]))
    keys: list[tuple[int, int]] = []
    metric_names: set[tuple[str, ...]] = set()
    reads = []
    while True:
        async with database.transaction(Tenant(owner.organization_id)) as session:
            with statements(runtime_engine) as seen:
                page = await read(session)
            if page is None:
                break
            keys += [(result["position"], result["repetition"]) for result in page]
            metric_names |= {
                tuple(e["metric_name"] for e in result["evaluations"]) for result in page
            }
            reads += await rows_handled(session, seen, "results", "evaluations")
    assert keys == [(p, r) for p in range(CASES) for r in range(REPETITIONS)]
    # Each result's evaluations, by metric name as the database collates it (not as Python does).
    async with database.transaction(Tenant(owner.organization_id)) as session:
        collated = await session.scalars(
            text(
                "SELECT name FROM (VALUES ('Zeta contains'), ('alpha relevance')) AS m(name)"
                " ORDER BY name"
            )
        )
    assert metric_names == {tuple(collated)}
    assert len(reads) == 2 * CASES * REPETITIONS // PAGE_ROWS  # results, then evaluations
    for handled, sql in reads:
        assert handled <= LINEAR, f"{handled} rows: {sql}"
