"""A chunk's reads of its own results (which it has, how many it has) while the run is being
written, before the planner's statistics know the run's rows: each must be read by the run's
(position, repetition) index, not by reading the whole run for every chunk, which made a
100,000-case run's database time grow with the square of its cases."""

from __future__ import annotations

import uuid

from database.core import Tenant
from database.results import crud
from tests.database.results.test_export_fresh_run import _run, _write, known_run  # noqa: F401
from tests.helpers import register
from tests.planner import rows_handled, statements

CASES, REPETITIONS = 1000, 3
CHUNK = list(range(CASES - 50, CASES))  # the run's last chunk of 50 cases
# The chunk's own 150 results, a few times over (the index, the aggregate): reading the run
# for it handles its 3,000 results.
LINEAR = 4 * len(CHUNK) * REPETITIONS


async def test_a_chunk_reads_only_its_own_results(known_run, client, database, runtime_engine):  # noqa: F811
    owner = await register(client)
    run = await _run(client, owner, cases=CASES, repetitions=REPETITIONS)
    await _write(database, owner.organization_id, run, CASES, REPETITIONS)
    run_id = uuid.UUID(run["id"])

    async with database.transaction(Tenant(owner.organization_id)) as session:
        with statements(runtime_engine) as seen:
            done = await crud.done_keys(session, run_id, CHUNK)
            counted = await crud.count_results(session, run_id, CHUNK, range(REPETITIONS))
        reads = await rows_handled(session, seen, "results")

    assert done == {(p, r) for p in CHUNK for r in range(REPETITIONS)}
    assert counted == len(CHUNK) * REPETITIONS
    assert len(reads) == 2
    for handled, sql in reads:
        assert handled <= LINEAR, f"{handled} rows: {sql}"
