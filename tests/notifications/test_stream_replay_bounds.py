"""What a stream's replay may take from the process: a bounded share of the database pool
however many streams open, an end the client can resume from when the database fails it,
and nothing past the server's stop; and one run's unsendable live text costs no other run
its deltas."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database, asyncpg_connect_args
from notifications import stream as streams
from notifications.hub import Hub
from notifications.publisher import DELTAS_CHANNEL, Publisher
from notifications.service import get_notifications
from notifications.stream import EventStream
from notifications.subscriber import SHUTDOWN, UNREADABLE, StreamLimits, Subscriber
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live
from tests.notifications.test_stream_resume import (
    assert_complete,
    read_stream,
    start_run,
    stored_events,
)

CASES = 4


async def _ended_run(live: Live) -> tuple[str, str]:
    with FakeOpenAI(require_api_key="sk-test", latency=0.01) as fake:
        run_id, token = await start_run(live, fake, CASES, concurrency=2)
        assert (await live.wait(run_id))["status"] == "completed"
    return run_id, token


async def test_replays_read_the_database_a_few_at_a_time_however_many_streams_open(
    live: Live, owner_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every stream's replay read at once: a few hundred streams of one organization took the
    whole pool, every tenant's requests waited, and some failed with a 500."""
    monkeypatch.setattr(streams, "REPLAY_FIRST_PAGE", 2)
    monkeypatch.setattr(streams, "REPLAY_PAGE", 2)
    run_id, token = await _ended_run(live)
    stored = await stored_events(owner_engine, run_id)
    hub = get_notifications().hub
    monkeypatch.setattr(hub, "replay_slots", asyncio.Semaphore(2))
    reading = hub.read_events
    at_once = most = replays = 0

    async def counted(session: Any, run: uuid.UUID, after: int, **kwargs: Any) -> Any:
        nonlocal at_once, most, replays
        if after >= len(stored):  # the hub's own read of what is new, not a replay
            return await reading(session, run, after, **kwargs)
        at_once += 1
        replays += 1
        most = max(most, at_once)
        try:
            await asyncio.sleep(0.02)  # each read takes a while: replays overlap if they may
            return await reading(session, run, after, **kwargs)
        finally:
            at_once -= 1

    monkeypatch.setattr(hub, "read_events", counted)
    read = await asyncio.gather(*(read_stream(live, run_id, token) for _ in range(12)))
    for stream in read:
        assert stream.status == 200 and stream.ended
        assert_complete(stream.events, stored, CASES)
    assert replays >= 12 * (len(stored) // 2)
    assert most == 2, most


async def test_a_replay_the_database_fails_ends_saying_so_and_resumes_whole(
    live: Live, owner_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay's read that failed (no connection free in time, one cut) escaped the
    response after its 200: the body stopped with no `retry:` and no word of why."""
    monkeypatch.setattr(streams, "REPLAY_FIRST_PAGE", 2)
    monkeypatch.setattr(streams, "REPLAY_PAGE", 2)
    run_id, token = await _ended_run(live)
    hub = get_notifications().hub
    reading = hub.read_events
    pages = 0

    async def cut_at_the_second_page(session: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 2:  # the read's own connection is cut under it
            await session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return await reading(session, *args, **kwargs)

    monkeypatch.setattr(hub, "read_events", cut_at_the_second_page)
    cut = await read_stream(live, run_id, token)
    assert cut.status == 200 and cut.ended
    assert [int(str(event.id)) for event in cut.events] == [1, 2]
    assert UNREADABLE in cut.comments
    assert cut.items[-1].retry is not None  # the client is told when to come back
    rest = await read_stream(live, run_id, token, last_event_id="2")
    assert_complete(cut.events + rest.events, await stored_events(owner_engine, run_id), CASES)


async def test_a_replay_that_waits_too_long_for_a_slot_ends_and_one_left_waits_no_more(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the pool exhausted, each replay ahead held its slot for a pool timeout, and the
    queue for them grew with the streams: the last waited minutes with nothing sent, and one
    whose client had gone stayed open, counted against its organization, until its turn."""
    monkeypatch.setattr(streams, "REPLAY_SLOT_WAIT_SECONDS", 1.5)
    run_id, token = await _ended_run(live)
    hub = get_notifications().hub
    monkeypatch.setattr(hub, "replay_slots", asyncio.Semaphore(1))
    await hub.replay_slots.acquire()  # every slot held: the pool is exhausted
    try:
        async with asyncio.timeout(15):
            waited = await read_stream(live, run_id, token)
        assert waited.status == 200 and waited.ended and not waited.events
        assert UNREADABLE in waited.comments

        monkeypatch.setattr(streams, "REPLAY_SLOT_WAIT_SECONDS", 600.0)
        gone = asyncio.create_task(read_stream(live, run_id, token))
        async with asyncio.timeout(10):
            while hub.subscriber_count == 0:  # noqa: ASYNC110 (the hub offers nothing to wait on)
                await asyncio.sleep(0.05)
        gone.cancel()  # its client leaves while the stream waits for a slot
        async with asyncio.timeout(10):
            while hub.subscriber_count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        hub.replay_slots.release()


async def test_a_stream_opened_as_the_server_stops_ends_at_once(live: Live) -> None:
    """The server's stop ended the streams open then; one whose request was still on its way
    subscribed after, and held the stop until the server's grace period cut it."""
    run_id, token = await _ended_run(live)
    get_notifications().hub.end_all(SHUTDOWN)
    async with asyncio.timeout(10):
        stream = await read_stream(live, run_id, token)
    assert stream.status == 200 and stream.ended
    assert SHUTDOWN in stream.comments
    assert not stream.events


async def test_a_runs_unsendable_live_text_costs_no_other_run_its_deltas(
    committed_database, database_urls
) -> None:
    """A lone surrogate in one run's streamed text (a target's JSON can escape one) failed the
    whole NOTIFY, with the other runs' deltas pending beside it."""
    received: dict[str, str] = {}
    connection = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    publisher = Publisher(committed_database, interval=0.05)

    def on_deltas(_c: object, _pid: int, _channel: str, payload: str) -> None:
        message = json.loads(payload)
        text_ = "".join(event["text"] for event in message["events"])
        received[message["run"]] = received.get(message["run"], "") + text_

    other, odd = str(uuid.uuid4()), str(uuid.uuid4())
    key = {"type": "output.delta", "position": 0, "repetition": 0}
    try:
        await connection.add_listener(DELTAS_CHANNEL, on_deltas)
        await publisher.start()
        publisher.delta(uuid.UUID(other), {**key, "text": "hello"})
        publisher.delta(uuid.UUID(odd), {**key, "text": "x\ud800y\x00z"})
        async with asyncio.timeout(10):
            while len(received) < 2:  # noqa: ASYNC110 (NOTIFYs offer no event to wait on)
                await asyncio.sleep(0.05)
    finally:
        await publisher.stop()
        await connection.close()
    assert received == {other: "hello", odd: "x\ufffdy\ufffdz"}


async def test_a_replay_waiting_for_a_slot_keeps_its_place_in_the_queue() -> None:
    """The wait was a one-second request for a slot, asked again each time it ran out: the
    stream went to the back of the queue, and under load streams passed their ten seconds and
    ended (28 of 200 streams of 20 pages, where waiting in turn took 2 s)."""
    slots = asyncio.Semaphore(1)
    await slots.acquire()
    limits = StreamLimits(heartbeat_seconds=600, send_timeout_seconds=600, max_lifetime_seconds=600)
    stream = EventStream(
        cast(Database, None),
        cast(Hub, SimpleNamespace(replay_slots=slots)),
        run_id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        after=0,
        committed=0,
        limits=limits,
        retry_ms=1000,
        terminal=frozenset(),
        run_ended=False,
    )
    served: list[str] = []

    async def replay(name: str) -> None:
        if await stream._replay_slot(Subscriber(uuid.uuid4(), 10, limits, None)):
            served.append(name)
            slots.release()

    first = asyncio.create_task(replay("first"))
    await asyncio.sleep(0.3)
    second = asyncio.create_task(replay("second"))
    await asyncio.sleep(0.85)  # past the first one's look, every second, at its stream only
    slots.release()
    await asyncio.gather(first, second)
    assert served == ["first", "second"]
