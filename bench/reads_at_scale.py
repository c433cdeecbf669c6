"""Reading a large run: GET /runs/{id}/summary, GET /runs/{id}/compare and pages of GET
/runs/{id}/results and of /runs/{id}/cases, for runs of 100,000 results with 2 metrics each
(goals: summary and compare under 1 s, a page at any depth under 100 ms).

The results and evaluations are written straight into the database (bench.compare_runs'
evaluations); every case carries a behavior, category and topic, so the summary's slices have
work to do. Baselines, measured alongside: one plain SQL pass over the rows each endpoint reads,
and the first page of results (what any later page should cost); and where compare's time
goes: its SQL reads alone, and its interval statistics alone over as many cases. Pages are also
read right after the runs are written, before their rows are analysed (as a dashboard reads a
run that has just ended; autovacuum analyses them up to a minute later)."""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from bench.compare_runs import _EVALUATIONS, _FINISH
from bench.export_stream import _analyze
from bench.harness import StolenTime, api_post, bench_app
from database import embedded
from database.core import Database, Tenant, get_database
from database.results.crud import pairing
from database.results.models import Run
from database.test_sets.slice_index import SliceIndex
from utils import statistics as stats

CASES = 100_000
PAGE = 100
DEPTHS = (0, 50_000, 99_900)
REPEATS = 5
PASSWORD = "bench-password-1"

# The pinned version's cases, beyond the few created through the API (direct, for speed).
_VERSION_CASES = text("""
INSERT INTO test_set_version_cases (version_id, position, organization_id, test_id, "case")
SELECT :version, p, :organization, NULL,
       jsonb_build_object('input', 'question ' || p, 'behavior', 'b' || p % 5,
                          'category', 'c' || p % 12, 'topic', 't' || p % 40)
FROM generate_series(:first, :cases - 1) AS p
""")
_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT gen_random_uuid(), :organization, :run, p, 0, NULL,
       jsonb_build_object('text', 'question ' || p), 'answer ' || p,
       CASE WHEN random() < :pass_share - (p % 10) * 0.02 THEN 'passed' ELSE 'failed' END,
       40 + random() * 120, 20, 30, 0.00005, false
FROM generate_series(0, :cases - 1) AS p
""")
# Floors: what the summary and the comparison read, once, with nothing computed on top: the
# results, and the evaluations (each carries its result's case), each grouped once.
_SUMMARY_FLOOR = text("""
SELECT status, NULL, count(*), NULL, avg(latency_ms) FROM results WHERE run_id = :a GROUP BY 1
UNION ALL
SELECT NULL, metric_name, count(*), avg(score), NULL FROM evaluations WHERE run_id = :a GROUP BY 2
""")
_COMPARE_FLOOR = text("""
SELECT run_id, position, count(*), sum((status = 'passed')::int), NULL
FROM results WHERE run_id IN (:a, :b) GROUP BY 1, 2
UNION ALL
SELECT run_id, position, count(*), NULL, avg(score)
FROM evaluations WHERE run_id IN (:a, :b) GROUP BY 1, 2
""")
_PAGE_FLOOR = text("""
SELECT * FROM results WHERE run_id = :a ORDER BY position, repetition LIMIT :limit
""")


async def _setup(client: httpx.AsyncClient) -> dict[str, Any]:
    registered = await api_post(
        client,
        "/auth/register",
        {"email": "reads@example.com", "password": PASSWORD, "name": "Bench"},
    )
    client.headers["Authorization"] = f"Bearer {registered['access_token']}"
    project = await api_post(client, "/projects", {"name": "reads"})
    tests = [{"input": f"question {i}"} for i in range(10)]
    ids = (await api_post(client, "/tests/bulk", {"project_id": project["id"], "tests": tests}))[
        "ids"
    ]
    test_set = await api_post(
        client, "/test-sets", {"project_id": project["id"], "name": "reads", "test_ids": ids}
    )
    metric = await api_post(
        client, "/metrics", {"project_id": project["id"], "name": "contains", "type": "contains"}
    )
    model = await api_post(client, "/models", {"name": "demo", "provider": "demo"})
    # The version both runs pin: the set's cases, and the rest written in directly.
    version = await api_post(client, f"/test-sets/{test_set['id']}/versions", {})
    organization = uuid.UUID(registered["organization"]["id"])
    async with get_database().transaction(Tenant(organization)) as session:
        await session.execute(
            _VERSION_CASES,
            {
                "version": uuid.UUID(version["id"]),
                "organization": organization,
                "first": len(ids),
                "cases": CASES,
            },
        )
    await _keep_slices(uuid.UUID(version["id"]))
    return {
        "organization": organization,
        "run": {"test_set_id": test_set["id"], "target_model_id": model["id"]}
        | {"metric_ids": [metric["id"]]},
    }


async def _run(client: httpx.AsyncClient, setup: dict[str, Any], pass_share: float) -> str:
    """A run created through the API (no worker picks it up), its results written in."""
    run = await api_post(client, "/runs", setup["run"])
    organization, run_id = setup["organization"], uuid.UUID(run["id"])
    assert run["counts"]["total"] == CASES, run  # the version written in _setup
    async with get_database().transaction(Tenant(organization)) as session:
        await session.execute(
            _RESULTS,
            {"organization": organization, "run": run_id, "cases": CASES, "pass_share": pass_share},
        )
        await session.execute(_EVALUATIONS, {"run": run_id})
        await session.execute(_FINISH, {"run": run_id})
    return str(run_id)


_CASES_IN_ORDER = text("""
SELECT "case" FROM test_set_version_cases WHERE version_id = :version ORDER BY position
""")
_SLICES_KEPT = text("""
UPDATE test_set_versions
SET slice_values = :slice_values, slice_codes = :slice_codes, case_count = :case_count
WHERE id = :version
""").bindparams(bindparam("slice_values", type_=JSONB()))


async def _keep_slices(version: uuid.UUID) -> None:
    """The version's slices and count as a publish of its cases would keep them (a version is
    immutable to the service: written as the tables' owner)."""
    owner = get_database().engine.url.set(username=embedded.OWNER_ROLE)
    owner_database = Database.connect(owner.render_as_string(hide_password=False))
    try:
        async with owner_database.engine.begin() as connection:
            cases = (await connection.execute(_CASES_IN_ORDER, {"version": version})).scalars()
            slices = SliceIndex()
            slices.add(list(cases))
            await connection.execute(
                _SLICES_KEPT,
                {
                    "version": version,
                    "slice_values": slices.values(),
                    "slice_codes": slices.codes(),
                    "case_count": CASES,
                },
            )
    finally:
        await owner_database.dispose()


def _pairing_reads(
    organization: uuid.UUID, ids: dict[str, uuid.UUID], *reads: str
) -> Callable[[], Awaitable[None]]:
    """What the comparison reads of the two runs, as it reads it (SQL, then columns): its
    cases, its metrics' evaluations, or both one after the other on one connection."""

    async def call() -> None:
        async with get_database().transaction(Tenant(organization)) as session:
            candidate, baseline = await session.get(Run, ids["a"]), await session.get(Run, ids["b"])
            assert candidate is not None and baseline is not None
            async with pairing.whole_run_plans(session):
                if "cases" in reads:
                    await pairing.paired_cases(session, baseline, candidate)
                if "metrics" in reads:
                    await pairing.paired_metrics(session, baseline, candidate)

    return call


def _bootstrap(*, means: bool) -> Callable[[], Awaitable[None]]:
    """The comparison's resampling of CASES cases with nothing else: five mean intervals
    (the pass rate, the metrics', cost, tokens), or the latency quantiles' intervals."""
    rng = np.random.default_rng(0)
    columns, latency = rng.random((CASES, 5)), rng.random((2, CASES)) * 100

    async def call() -> None:
        bootstrap = stats.PairedBootstrap(CASES, seed=1)
        if means:
            bootstrap.mean_intervals(columns)
        else:
            bootstrap.quantile_delta_intervals(latency[0], latency[1], (0.5, 0.95))

    return call


async def _median(call: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
    """(median, fastest, slowest) seconds of REPEATS calls, after one warm-up."""
    await call()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times), max(times)


def _ms(figures: tuple[float, float, float]) -> str:
    median, low, high = figures
    return f"{median * 1000:7.1f} ms [{low * 1000:.0f}-{high * 1000:.0f}]"


async def run() -> None:
    stolen = StolenTime()
    async with bench_app(bcrypt_rounds=4) as client:
        setup = await _setup(client)
        baseline = await _run(client, setup, 0.85)
        candidate = await _run(client, setup, 0.82)
        organization = setup["organization"]

        async def get(path: str, **params: Any) -> dict[str, Any]:
            response = await client.get(f"/api/v1/runs/{candidate}{path}", params=params)
            assert response.status_code == 200, response.text
            return dict(response.json())

        figures: dict[str, tuple[float, float, float]] = {}
        # Pages read as the run ends, before its rows are analysed (as a dashboard reads them).
        with stolen.measure():
            for depth in DEPTHS[:2]:
                page = functools.partial(get, "/results", limit=PAGE, offset=depth)
                figures[f"fresh, offset {depth}"] = await _median(page)
        # The statistics autovacuum would gather as a run writes: ANALYZE, as the tables' owner.
        owner = get_database().engine.url.set(username=embedded.OWNER_ROLE)
        await _analyze(owner.render_as_string(hide_password=False))

        def sql(query: Any, **params: Any) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                async with get_database().transaction(Tenant(organization)) as session:
                    (await session.execute(query, params)).all()

            return call

        ids = {"a": uuid.UUID(candidate), "b": uuid.UUID(baseline)}
        with stolen.measure():
            figures["summary"] = await _median(lambda: get("/summary"))
            figures["summary floor"] = await _median(sql(_SUMMARY_FLOOR, a=ids["a"]))
            figures["compare"] = await _median(lambda: get("/compare", baseline=baseline))
            figures["compare floor"] = await _median(sql(_COMPARE_FLOOR, **ids))
            figures["compare reads"] = await _median(
                _pairing_reads(organization, ids, "cases", "metrics")
            )
            figures["cases read"] = await _median(_pairing_reads(organization, ids, "cases"))
            figures["metrics read"] = await _median(_pairing_reads(organization, ids, "metrics"))
            figures["bootstrap means"] = await _median(_bootstrap(means=True))
            figures["bootstrap quantiles"] = await _median(_bootstrap(means=False))
            figures["page floor"] = await _median(sql(_PAGE_FLOOR, a=ids["a"], limit=PAGE))
            for depth in DEPTHS:
                page = functools.partial(get, "/results", limit=PAGE, offset=depth)
                figures[f"offset {depth}"] = await _median(page)
            for depth in DEPTHS[::2]:
                page = functools.partial(get, "/cases", limit=PAGE, offset=depth)
                figures[f"cases, offset {depth}"] = await _median(page)
            deep = await get("/results", limit=PAGE, offset=DEPTHS[-1] - PAGE)
            cursor = deep.get("next_cursor")
            if cursor is not None:
                figures[f"cursor {DEPTHS[-1]}"] = await _median(
                    lambda: get("/results", limit=PAGE, cursor=cursor)
                )
    first = figures["offset 0"][0]
    print(f"reads of a large run ({CASES:,} results, 2 metrics; median of {REPEATS}, range)")
    for name, floor, goal in (
        ("summary", "summary floor", 1000),
        ("compare", "compare floor", 1000),
    ):
        print(
            f"  GET /runs/{{id}}/{name}: {_ms(figures[name])}  (goal < {goal:,} ms);"
            f" one SQL pass over its rows {_ms(figures[floor])},"
            f" {figures[name][0] / figures[floor][0]:.1f}x it"
        )
    print(
        f"    where compare's time goes: its SQL reads, decoded to columns, one after the"
        f" other {_ms(figures['compare reads'])} (the cases {_ms(figures['cases read'])}, the"
        f" metrics' evaluations {_ms(figures['metrics read'])}; the service reads these two"
        " side by side, on two connections);"
        f" the interval statistics alone over {CASES:,} cases"
        " (utils.statistics: from LARGE_N cases, normal intervals for means and a banded"
        " bootstrap for quantiles):"
        f" 5 mean intervals {_ms(figures['bootstrap means'])}, the latency quantiles'"
        f" {_ms(figures['bootstrap quantiles'])} (in a thread of their own)"
    )
    print(f"  results page floor, the first {PAGE} rows in plain SQL: {_ms(figures['page floor'])}")
    for name, value in figures.items():
        if name.startswith(("offset", "cursor", "fresh")):
            print(
                f"  GET /runs/{{id}}/results {name:>20}: {_ms(value)}  (goal < 100 ms);"
                f" {value[0] / first:.1f}x the first page"
            )
    for name, value in figures.items():
        if name.startswith("cases, "):
            print(
                f"  GET /runs/{{id}}/cases {name.removeprefix('cases, '):>22}: {_ms(value)}"
                f"  (goal < 100 ms); {value[0] / first:.1f}x the first page of results"
            )
    if stolen.share is not None:
        print(f"  CPU time the hypervisor gave other guests meanwhile: {stolen.share:.0%}")


if __name__ == "__main__":
    import uvloop

    uvloop.run(run())
