"""Pages of GET /runs/{id}/results read as a run ends (or while it runs), before the planner's
statistics know its rows: each page must be read by the run's keyset index and its evaluations
by their results', not by sorting the rest of the run or walking all its evaluations (a page at
50,000 of 100,000 fresh results took 600 ms, its evaluations' read 500 of them)."""

from __future__ import annotations

import uuid

from database.core import Tenant
from database.results.reads import result_page
from tests.database.results.test_export_fresh_run import _run, _write, known_run  # noqa: F401
from tests.helpers import register
from tests.planner import rows_handled, settings_of_reads, statements

CASES, REPETITIONS, LIMIT = 1000, 3, 100
# A page's reads handle its own rows a few times over (the index, the running sum of their
# sizes, the limit; two evaluations a result): a plan that sorts the rest of the run, or walks
# the run's evaluations, handles thousands.
LINEAR = 5 * 2 * LIMIT


async def test_each_page_of_a_fresh_run_is_read_by_its_keys(
    known_run,  # noqa: F811
    client,
    database,
    runtime_engine,
):
    owner = await register(client)
    run = await _run(client, owner, cases=CASES, repetitions=REPETITIONS)
    await _write(database, owner.organization_id, run, CASES, REPETITIONS)
    run_id = uuid.UUID(run["id"])

    keys: list[tuple[int, int]] = []
    evaluated: set[tuple[str, ...]] = set()
    reads = []
    walks: list[dict[str, str | None]] = []  # the settings each walk to an offset ran under
    cursor = None
    for offset in (0, CASES * REPETITIONS // 2, None):  # at the start, midway, then by cursor
        while True:
            async with database.transaction(Tenant(owner.organization_id)) as session:
                with statements(runtime_engine) as seen:
                    page = await result_page(
                        session, run_id, status=None, limit=LIMIT, offset=offset or 0, cursor=cursor
                    )
                reads += await rows_handled(session, seen, "results", "evaluations")
            walks += [made for sent, made in settings_of_reads(seen) if "OFFSET" in sent.sql]
            if offset is not None:
                break
            keys += [(result.position, result.repetition) for result in page.items]
            evaluated |= {tuple(e.metric_name for e in result.evaluations) for result in page.items}
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert keys == [(p, r) for p in range(CASES) for r in range(REPETITIONS)]
    assert evaluated == {("Zeta contains", "alpha relevance")}
    # An offset's key is found by walking the run's index to it: that read is the offset's
    # size by its nature, not the run's (a sort of the whole run handles all of it, twice).
    [(walked, _)] = [(n, sql) for n, sql in reads if "OFFSET" in sql]
    assert walked <= CASES * REPETITIONS // 2 + LINEAR, f"{walked} rows to the offset"
    [walk] = walks  # (planned without sorts: at 100,000 fresh results a sort spilled to disk)
    assert walk["enable_sort"] == "off" and walk["enable_bitmapscan"] == "off"
    paged = [(n, sql) for n, sql in reads if "OFFSET" not in sql]
    assert len(paged) == 2 * (2 + CASES * REPETITIONS // LIMIT)  # results, then evaluations
    for handled, sql in paged:
        assert handled <= LINEAR, f"{handled} rows: {sql}"
