"""A chunk's close (the last write of its results): a hole among its own cases is reported,
so that the queue runs the chunk again, and leaves the run open, whatever other chunks have
written; the write that brings the run's last result in completes the run. A write decides
on the run's total and budget as they stand, not as its writer loaded them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from database.core import Database
from database.results import crud, execution
from database.results.models import Run
from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import tenant_session

CASES = 5
HOLE = 3  # the position whose result is taken out


async def _run_with_a_hole(
    lab: Lab, fake: FakeOpenAI, database: Database, *, total: int = CASES
) -> uuid.UUID:
    """A completed run of CASES cases, reopened with the result at HOLE deleted (and `total`
    results planned)."""
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"case {i}"} for i in range(CASES)])
    metric = await lab.metric("contains", parameters={"value": "case"})
    run = await lab.wait((await lab.run(test_set, target, metric_ids=[metric]))["id"])
    assert run["status"] == "completed"
    run_id = uuid.UUID(run["id"])
    async with tenant_session(database, lab.account.organization_id) as session:
        await session.execute(
            text("DELETE FROM results WHERE run_id = :id AND position = :hole"),
            {"id": run_id, "hole": HOLE},
        )
        await crud.reopen(session, run_id, repetitions=1, total=total, max_cost=None)
    return run_id


async def _loaded_before_a_repeat(
    lab: Lab, fake: FakeOpenAI, database: Database
) -> tuple[uuid.UUID, Run]:
    """A run with a hole, as a writer loaded it (total CASES) before a repeat raised its total
    by one."""
    run_id = await _run_with_a_hole(lab, fake, database, total=CASES)
    async with tenant_session(database, lab.account.organization_id) as session:
        loaded = await crud.get_run(session, run_id)
    async with tenant_session(database, lab.account.organization_id) as session:
        await crud.reopen(session, run_id, repetitions=2, total=CASES + 1, max_cost=None)
    assert loaded is not None and loaded.total == CASES
    return run_id, loaded


def _result(lab: Lab, run_id: uuid.UUID, position: int) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "organization_id": lab.account.organization_id,
        "run_id": run_id,
        "position": position,
        "repetition": 0,
        "input": {"text": f"case {position}"},
        "status": "passed",
        "cached": False,
    }


async def _close(
    database: Database,
    lab: Lab,
    run_id: uuid.UUID,
    positions: list[int],
    batch: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    run: Run | None = None,
) -> tuple[execution.Written, str]:
    """The close of a chunk of `positions` (by a writer holding `run` as it loaded it, if
    given): what it wrote, and the run's status after it."""
    closing = execution.Closing(positions, range(1), expected=len(positions))
    async with tenant_session(database, lab.account.organization_id) as session:
        run = run or await crud.get_run(session, run_id)
        assert run is not None
        written = await execution.write(session, run, batch, closing=closing)
    async with tenant_session(database, lab.account.organization_id) as session:
        run = await crud.get_run(session, run_id)
        assert run is not None
        return written, run.status


async def test_a_chunk_closing_with_a_hole_reports_it_and_the_run_stays_open(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    run_id = await _run_with_a_hole(lab, fake, committed_database)

    written, status = await _close(committed_database, lab, run_id, list(range(CASES)), [])
    assert (written.missing, written.ended, status) == (1, False, "queued")

    # A chunk whose own cases are all in has no hole, while the run still has one elsewhere.
    written, status = await _close(committed_database, lab, run_id, list(range(HOLE)), [])
    assert (written.missing, written.ended, status) == (0, False, "queued")


async def test_the_close_that_brings_the_last_result_in_completes_the_run(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    run_id = await _run_with_a_hole(lab, fake, committed_database)
    last = _result(lab, run_id, HOLE)

    written, status = await _close(
        committed_database, lab, run_id, list(range(CASES)), [(last, [])]
    )
    assert (written.missing, written.ended, status) == (0, False, "completed")


async def test_a_close_counts_against_the_total_as_it_stands_not_as_the_writer_loaded_it(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    """A writer loaded the run before a repeat raised its total: all of the run's results it
    knew of are in, yet the run has one more to come, and stays open."""
    run_id, loaded = await _loaded_before_a_repeat(lab, fake, committed_database)
    last = _result(lab, run_id, HOLE)

    written, status = await _close(
        committed_database, lab, run_id, list(range(CASES)), [(last, [])], run=loaded
    )
    assert (written.missing, written.ended, status) == (0, False, "queued")


async def test_a_writer_holding_the_run_as_it_loaded_it_ends_the_run_as_it_stands(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    """The chunk that brings the last result of a repeated run in may have loaded the run
    before the repeat: the progress and the end it records count the run's total as it
    stands."""
    run_id, loaded = await _loaded_before_a_repeat(lab, fake, committed_database)
    last = [_result(lab, run_id, HOLE), _result(lab, run_id, 0) | {"repetition": 1}]

    written, status = await _close(
        committed_database,
        lab,
        run_id,
        list(range(CASES)),
        [(result, []) for result in last],
        run=loaded,
    )
    assert (written.missing, written.ended, status) == (0, False, "completed")
    async with tenant_session(committed_database, lab.account.organization_id) as session:
        logged = await crud.events_after(session, run_id, 0, limit=1000)
    finished = [event.data for event in logged if event.type == "run.finished"][-1]  # (its 2nd)
    assert (finished["total"], finished["done"]) == (CASES + 1, CASES + 1)
    progress = [event.data for event in logged if event.type == "run.progress"][-1]
    assert (progress["total"], progress["done"]) == (CASES + 1, CASES + 1)


async def test_a_count_past_the_total_does_not_hide_a_hole(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    """More results than the run's total (a rescore's source given more since, say) say
    nothing of this chunk's own: its hole is reported, and the run stays open."""
    run_id = await _run_with_a_hole(lab, fake, committed_database, total=CASES - 2)

    written, status = await _close(committed_database, lab, run_id, list(range(CASES)), [])
    assert (written.missing, written.ended, status) == (1, False, "queued")


async def test_a_write_checks_the_budget_as_it_stands_not_as_the_writer_loaded_it(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    """A writer loaded the run under a budget a repeat has since raised: a result costing more
    than the old budget, and less than the new, does not stop the run."""
    run_id = await _run_with_a_hole(lab, fake, committed_database)
    organization = lab.account.organization_id
    async with tenant_session(committed_database, organization) as session:
        await crud.reopen(session, run_id, repetitions=1, total=CASES + 1, max_cost=0.5)
    async with tenant_session(committed_database, organization) as session:
        loaded = await crud.get_run(session, run_id)
    async with tenant_session(committed_database, organization) as session:
        await crud.reopen(session, run_id, repetitions=2, total=CASES + 1, max_cost=10.0)
    assert loaded is not None and loaded.max_cost == 0.5
    costly = _result(lab, run_id, HOLE) | {"cost": 1.0}

    async with tenant_session(committed_database, organization) as session:
        written = await execution.write(session, loaded, [(costly, [])])
    async with tenant_session(committed_database, organization) as session:
        run = await crud.get_run(session, run_id)
    assert run is not None
    assert (written.ended, run.status, run.spent) == (False, "queued", 1.0)


async def test_a_case_answered_twice_counts_both_calls_once_each(
    lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    """A chunk taken over while its first worker still ran: both attempts paid for the case,
    and the second's result is not kept, but its cost counts; the same result written again
    (a commit whose reply was lost) is not charged twice."""
    run_id = await _run_with_a_hole(lab, fake, committed_database)
    organization = lab.account.organization_id
    first = _result(lab, run_id, HOLE) | {"cost": 1.0}
    judged = {"metric_name": "judge", "metric_type": "llm-judge", "cost": 0.25}
    second = _result(lab, run_id, HOLE) | {"cost": 2.0}

    batches: list[list[tuple[dict[str, Any], list[dict[str, Any]]]]] = [
        [(first, [])],
        [(first, [])],
        [(second, [judged])],
    ]
    for batch in batches:
        async with tenant_session(committed_database, organization) as session:
            run = await crud.get_run(session, run_id)
            assert run is not None
            await execution.write(session, run, batch)
    async with tenant_session(committed_database, organization) as session:
        run = await crud.get_run(session, run_id)
        kept = await session.scalar(
            text("SELECT id FROM results WHERE run_id = :id AND position = :hole"),
            {"id": run_id, "hole": HOLE},
        )
    assert run is not None and kept == first["id"]
    assert run.spent == 3.25
