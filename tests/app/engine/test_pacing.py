"""The shared pace: a model's requests-per-minute as one schedule of evenly spaced slots in
PostgreSQL, taken by every process (here: several engines, as several processes would hold)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.engine import pacing
from app.engine.pacing import SharedPace
from database.core import Database, asyncpg_connect_args, set_database
from database.setup import DatabaseUrls
from tests.app.engine.spacing import (
    assert_an_overslept_call_takes_the_next_free_slot,
    assert_each_call_waits_for_its_slot,
)
from utils.logging import configure_logging

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
async def other_process(database_urls: DatabaseUrls) -> AsyncIterator[Database]:
    """The database as a second process sees it: an engine and pool of its own."""
    other = Database.connect(database_urls.runtime, pool_size=2, max_overflow=10)
    yield other
    await other.dispose()


async def test_slots_are_evenly_spaced(database: Database):
    pace = SharedPace(uuid.uuid4(), 60)  # one a second
    # The database reckons each delay from a moment between the call and its answer: a slot
    # lies between the two plus its delay, however slowly the answer came back.
    delays, earliest, latest = [], [], []
    for _ in range(5):
        asked = time.monotonic()
        delays.append(await pace.take_slot(database))
        earliest.append(asked + delays[-1])
        latest.append(time.monotonic() + delays[-1])
    assert delays[0] == pytest.approx(0.0, abs=0.05)  # the first call goes at once
    for k in range(1, 5):
        # The k-th slot comes k seconds after the first: within what the two brackets allow.
        assert earliest[k] - latest[0] - 0.01 <= k <= latest[k] - earliest[0] + 0.01, k


async def test_two_processes_take_turns_on_one_schedule(
    database: Database, other_process: Database
):
    model = uuid.uuid4()
    stamps: dict[str, list[float]] = {"first": [], "second": []}

    async def calls(name: str, db: Database) -> None:
        pace = SharedPace(model, 600)  # 0.1 s apart, whichever process calls
        for _ in range(5):
            delay = await pace.take_slot(db)
            await asyncio.sleep(delay)
            stamps[name].append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(calls("first", database), calls("second", other_process))
    together = stamps["first"] + stamps["second"]
    assert len(together) == 10
    # Alone each would go every 0.1 s: 10 calls in ~0.5 s. Shared: ~0.9 s, no two at once.
    assert_each_call_waits_for_its_slot(together, started, 0.1)


async def test_a_call_that_oversleeps_its_slot_takes_another(
    database: Database, monkeypatch: pytest.MonkeyPatch
):
    pace = SharedPace(uuid.uuid4(), 150)  # 0.4 s apart
    await assert_an_overslept_call_takes_the_next_free_slot(pace, monkeypatch)


async def test_wait_sleeps_without_holding_a_connection(
    database: Database, runtime_engine: AsyncEngine
):
    pace = SharedPace(uuid.uuid4(), 60)
    await pace.wait()  # the first slot is now
    held = runtime_engine.pool.checkedout()  # type: ignore[attr-defined]
    started = time.monotonic()
    waiting = asyncio.create_task(pace.wait())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert runtime_engine.pool.checkedout() == held  # type: ignore[attr-defined]
    await waiting
    assert time.monotonic() - started >= 0.9


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "local"])
async def test_cancelled_calls_leave_no_slots_behind(database: Database, shared: bool):
    """A run of concurrency 20 cancelled while its calls waited: each had taken a slot, 20 s
    of them at 60 a minute, which the model's next calls waited out. Now at most the waiting
    call's own slot is taken, and the next call's follows it."""
    model = uuid.uuid4()
    pace = SharedPace(model, 60) if shared else pacing.Pace(60)
    waiting = [asyncio.create_task(pace.wait()) for _ in range(20)]
    await asyncio.sleep(0.3)  # the first went at once, the second waits a second
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    taken = pace.take_slot(database) if isinstance(pace, SharedPace) else pace.take_slot()
    assert await taken <= 2.0


async def test_the_pace_holds_when_a_round_trip_is_longer_than_an_interval(
    database: Database, monkeypatch: pytest.MonkeyPatch
):
    """100 calls a second, and the database 30 ms away: calls that took their turns one at a
    time would go at most 33 times a second; several turns let the round trips overlap."""
    pace = SharedPace(uuid.uuid4(), 6000)
    take_slot = pace.take_slot

    async def far(db: Database) -> float:
        await asyncio.sleep(0.03)
        return await take_slot(db)

    monkeypatch.setattr(pace, "take_slot", far)
    went: list[float] = []

    async def caller() -> None:
        while True:
            await pace.wait()
            went.append(time.monotonic())

    callers = [asyncio.create_task(caller()) for _ in range(20)]
    await asyncio.sleep(0.5)  # the schedule settles
    counted_from = time.monotonic()
    await asyncio.sleep(1.0)
    for task in callers:
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    in_a_second = [at for at in went if counted_from <= at < counted_from + 1.0]
    assert 60 <= len(in_a_second) <= 101, len(in_a_second)


async def test_a_changed_limit_starts_its_own_schedule(database: Database):
    model = uuid.uuid4()
    slow = SharedPace(model, 6)  # 10 s apart
    assert [round(await slow.take_slot(database)) for _ in range(3)] == [0, 10, 20]
    assert await SharedPace(model, 600).take_slot(database) == pytest.approx(0.0, abs=0.05)
    # The calls already scheduled at the old limit keep their slots.
    assert round(await slow.take_slot(database)) == 30


async def test_models_have_schedules_of_their_own(database: Database):
    busy = SharedPace(uuid.uuid4(), 6)
    await busy.take_slot(database)
    assert await busy.take_slot(database) > 9
    assert await SharedPace(uuid.uuid4(), 6).take_slot(database) == pytest.approx(0.0, abs=0.05)


async def test_schedules_that_ran_out_are_collected(database: Database, owner_engine: AsyncEngine):
    spent, fresh = uuid.uuid4(), uuid.uuid4()

    async def rows() -> set[uuid.UUID]:
        async with owner_engine.connect() as connection:
            result = await connection.execute(
                text(
                    "SELECT model_config_id FROM assay_private.provider_pacing"
                    " WHERE model_config_id IN (:spent, :fresh)"
                ),
                {"spent": spent, "fresh": fresh},
            )
            return {row[0] for row in result}

    await SharedPace(spent, 60_000).take_slot(database)  # its next slot is 1 ms away
    assert await rows() == {spent}
    await asyncio.sleep(0.05)
    await SharedPace(fresh, 60).take_slot(database)
    assert await rows() == {fresh}


async def test_the_runtime_role_reaches_the_schedule_only_through_the_function(
    database_urls: DatabaseUrls,
):
    connection = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    try:
        for statement in (
            "SELECT * FROM assay_private.provider_pacing",
            "DELETE FROM assay_private.provider_pacing",
            "UPDATE assay_private.provider_pacing SET next_slot = now()",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
        model = uuid.uuid4()
        first = await connection.fetchval("SELECT assay_provider_slot($1, 60)", model)
        second = await connection.fetchval("SELECT assay_provider_slot($1, 60)", model)
        assert first == pytest.approx(0.0, abs=0.05)
        assert 0.9 < second <= 1.0
        with pytest.raises(asyncpg.InvalidParameterValueError, match="at least 1"):
            await connection.fetchval("SELECT assay_provider_slot($1, 0)", model)
    finally:
        await connection.close()


# --- without the database ----------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a database hanging)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _spacing_of_three(pace: SharedPace) -> float:
    started = time.monotonic()
    for _ in range(3):
        await pace.wait()
    return time.monotonic() - started


@pytest.mark.parametrize("answer", ["refused", "silent"])
async def test_an_unreachable_database_leaves_the_pace_to_this_process(
    answer: str, silent_port: int, database: Database, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(pacing, "SLOT_TIMEOUT_SECONDS", 0.3)
    port = _closed_port() if answer == "refused" else silent_port
    gone = Database.connect(f"postgresql+asyncpg://assay:pw@127.0.0.1:{port}/assay")
    pace = SharedPace(uuid.uuid4(), 600)
    asked = 0
    take_slot = pace.take_slot

    async def counted(database: Database) -> float:
        nonlocal asked
        asked += 1
        return await take_slot(database)

    monkeypatch.setattr(pace, "take_slot", counted)
    set_database(gone)
    try:
        elapsed = await _spacing_of_three(pace)
    finally:
        set_database(database)
        await gone.dispose()
    # Every call went, still spaced (0.1 s apart); only the first waited for the database.
    assert elapsed >= 2 * 0.1 * 0.9
    assert asked == 1


async def test_the_database_is_asked_again_after_a_while_and_both_turns_are_logged(
    database: Database,
    owner_engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(pacing, "SHARED_RETRY_SECONDS", 1.0)
    model = uuid.uuid4()

    async def scheduled() -> bool:
        async with owner_engine.connect() as connection:
            found = await connection.scalar(
                text(
                    "SELECT count(*) FROM assay_private.provider_pacing WHERE model_config_id = :m"
                ),
                {"m": model},
            )
        return bool(found)

    gone = Database.connect(f"postgresql+asyncpg://assay:pw-0xdead@127.0.0.1:{_closed_port()}/x")
    pace = SharedPace(model, 6000)
    configure_logging("json")
    try:
        set_database(gone)
        for _ in range(3):
            await pace.wait()
        set_database(database)
        await pace.wait()  # the database is back, but not asked again yet
        assert not await scheduled()
        await asyncio.sleep(1.05)
        await pace.wait()
        assert await scheduled()
    finally:
        set_database(database)
        configure_logging("console")
        await gone.dispose()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line[:1] == "{"]
    ours = [line for line in lines if line.get("logger") == pacing.__name__]
    assert [line["event"] for line in ours] == [
        "provider pacing falls back to this process alone",
        "provider pacing is shared again",
    ]
    assert all(line["model_config_id"] == str(model) for line in ours)
    assert "pw-0xdead" not in err


async def test_with_no_database_in_the_process_the_pace_is_local():
    set_database(None)
    elapsed = await _spacing_of_three(SharedPace(uuid.uuid4(), 600))
    assert elapsed >= 2 * 0.1 * 0.9
