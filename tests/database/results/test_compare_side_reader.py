"""A comparison reads its metrics on a second connection while it reads the cases (side_reader):
that reader acts for the same tenant, read-only; it is not used where the transaction has
written (it could not see that) or where enough are open already; and the comparison it gives
is the one read on a single connection, field for field, also when the comparison fails."""

from __future__ import annotations

import random
import uuid
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from database.core import Database, Tenant, side_reader
from database.results.comparison import CompareOptions, compare
from database.results.models import Run
from tests.helpers import Account, create_run_body, register, remove_account
from utils.errors import InvalidInput

CASES = 300
REPETITIONS = 2

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT id, :organization, :run, position, repetition, test_id, '{}'::jsonb, 'answer', status,
       latency, 10, 20, 0.001, false
FROM unnest(CAST(:ids AS UUID[]), CAST(:positions AS INT[]), CAST(:repetitions AS INT[]),
            CAST(:test_ids AS UUID[]), CAST(:statuses AS TEXT[]), CAST(:latencies AS FLOAT8[]))
    AS r(id, position, repetition, test_id, status, latency)
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed)
SELECT gen_random_uuid(), :organization, result_id, :run, r.position, name, kind, score,
       score >= 0.5
FROM unnest(CAST(:result_ids AS UUID[]), CAST(:names AS TEXT[]), CAST(:kinds AS TEXT[]),
            CAST(:scores AS FLOAT8[])) AS e(result_id, name, kind, score)
JOIN results r ON r.id = e.result_id
""")
_FINISH = text("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = :run")
_PID = text("SELECT pg_backend_pid()")
_TENANT = text(
    "SELECT current_setting('app.organization_id', true), current_setting('app.user_id', true)"
)


async def _finished_run(
    client: httpx.AsyncClient,
    database: Database,
    owner: Account,
    body: dict[str, Any],
    test_ids: list[str],
    seed: int,
) -> uuid.UUID:
    """A run marked completed with the results and two metrics' evaluations written here."""
    created = await client.post(
        "/api/v1/runs", json={**body, "repetitions": REPETITIONS}, headers=owner.headers
    )
    assert created.status_code == 202, created.text
    run = uuid.UUID(created.json()["id"])
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {
        key: [] for key in ("ids", "positions", "repetitions", "test_ids", "statuses", "latencies")
    }
    evaluations: dict[str, list[Any]] = {
        key: [] for key in ("result_ids", "names", "kinds", "scores")
    }
    for position, test_id in enumerate(test_ids):
        for repetition in range(REPETITIONS):
            result, status = uuid.uuid4(), rng.choice(("passed", "passed", "failed", "errored"))
            values = (result, position, repetition, test_id, status, float(rng.randint(40, 400)))
            for key, value in zip(rows, values, strict=True):
                rows[key].append(value)
            if status != "errored":
                for name, kind, score in (
                    ("contains", "contains", float(status == "passed")),
                    ("relevance", "answer-relevance", rng.randint(0, 8) / 8),
                ):
                    for key, value in zip(evaluations, (result, name, kind, score), strict=True):
                        evaluations[key].append(value)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        params = {"organization": owner.organization_id, "run": run}
        await session.execute(_RESULTS, {**params, **rows})
        await session.execute(_EVALUATIONS, {**params, **evaluations})
        await session.execute(_FINISH, {"run": run})
    return run


async def _runs(
    client: httpx.AsyncClient, database: Database, owner: Account
) -> tuple[uuid.UUID, uuid.UUID]:
    tests = [{"input": f"question {i}", "behavior": f"b{i % 3}"} for i in range(CASES)]
    test_ids, body = await create_run_body(client, owner, tests)
    baseline = await _finished_run(client, database, owner, body, test_ids, seed=1)
    return baseline, await _finished_run(client, database, owner, body, test_ids, seed=2)


async def _compare(
    database: Database, owner: Account, runs: tuple[uuid.UUID, uuid.UUID], *, written: bool
) -> dict[str, Any]:
    """The comparison of the second run with the first, in a transaction that has written
    (`pg_current_xact_id` gives it a transaction id, as a write does) or not."""
    async with database.transaction(Tenant(owner.organization_id)) as session:
        if written:
            await session.execute(text("SELECT pg_current_xact_id()"))
        baseline, candidate = [await session.get(Run, run) for run in runs]
        assert baseline is not None and candidate is not None
        found = await compare(session, candidate, baseline, CompareOptions())
    return found.model_dump(mode="json")


async def _two_side_readers(database: Database, owner: Account, stack: AsyncExitStack) -> list:
    found = []
    for _ in range(2):
        session = await stack.enter_async_context(
            database.transaction(Tenant(owner.organization_id))
        )
        found.append(await stack.enter_async_context(side_reader(session)))
    return found


async def test_the_side_reader_acts_for_the_same_tenant_and_only_reads(
    committed_database: Database,
    committed_client: httpx.AsyncClient,
    committed_owner: Account,
    owner_engine: Any,
):
    # Another organization, which the side reader must not see.
    other = await register(committed_client)
    try:
        tenant = Tenant(committed_owner.organization_id, committed_owner.user_id)
        async with (
            committed_database.transaction(tenant) as session,
            side_reader(session) as side,
        ):
            assert side is not None
            assert await side.scalar(_PID) != await session.scalar(_PID)
            settings = tuple((await side.execute(_TENANT)).one())
            assert settings == (str(committed_owner.organization_id), str(committed_owner.user_id))
            seen = (await side.execute(text("SELECT id FROM organizations"))).scalars()
            assert list(seen) == [committed_owner.organization_id]
            with pytest.raises(DBAPIError, match="read-only transaction"):
                await side.execute(
                    text("UPDATE organizations SET name = 'changed' WHERE id = :id"),
                    {"id": committed_owner.organization_id},
                )
    finally:
        await remove_account(owner_engine, other)


async def test_none_once_the_transaction_has_written_or_while_two_are_open(
    committed_database: Database, committed_owner: Account
):
    async with committed_database.transaction(Tenant(committed_owner.organization_id)) as session:
        await session.execute(text("SELECT pg_current_xact_id()"))
        async with side_reader(session) as side:
            assert side is None
    async with committed_database.sessionmaker() as session, side_reader(session) as side:
        assert side is None  # no tenant entered
    async with AsyncExitStack() as stack:
        assert None not in await _two_side_readers(committed_database, committed_owner, stack)
        async with (
            committed_database.transaction(Tenant(committed_owner.organization_id)) as session,
            side_reader(session) as side,
        ):
            assert side is None
    async with AsyncExitStack() as stack:  # the two have closed: two may open again
        assert None not in await _two_side_readers(committed_database, committed_owner, stack)


async def test_a_comparison_read_beside_is_the_one_read_on_one_connection(
    committed_database: Database, committed_client: httpx.AsyncClient, committed_owner: Account
):
    runs = await _runs(committed_client, committed_database, committed_owner)
    beside = await _compare(committed_database, committed_owner, runs, written=False)
    alone = await _compare(committed_database, committed_owner, runs, written=True)
    assert beside == alone
    async with AsyncExitStack() as stack:  # every side reader taken: read on one connection
        await _two_side_readers(committed_database, committed_owner, stack)
        assert await _compare(committed_database, committed_owner, runs, written=False) == alone
    assert len(alone["metrics"]) == 2 and alone["cases"]["paired"] > CASES // 2
    response = await committed_client.get(
        f"/api/v1/runs/{runs[1]}/compare",
        params={"baseline": str(runs[0])},
        headers=committed_owner.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == beside


async def test_a_comparison_that_fails_leaves_no_side_reader_open(
    committed_database: Database, committed_client: httpx.AsyncClient, committed_owner: Account
):
    # Two runs of different tests: no case in common, found once the cases are read, while the
    # metrics are still being read beside.
    first, _ = await _runs(committed_client, committed_database, committed_owner)
    second, _ = await _runs(committed_client, committed_database, committed_owner)
    with pytest.raises(InvalidInput, match="no case in common"):
        await _compare(committed_database, committed_owner, (first, second), written=False)
    async with AsyncExitStack() as stack:
        assert None not in await _two_side_readers(committed_database, committed_owner, stack)
