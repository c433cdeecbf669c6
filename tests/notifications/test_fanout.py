"""The hub writes for live streams itself: an idle stream's task is not woken per event, a
send the client cannot take yet is handed back to the stream's task, and every stream still
gets every event once, in order, with its end."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from database.core import Tenant
from database.results import crud as results_crud
from database.results.events import RESULT_RECORDED, TERMINAL_EVENTS
from notifications import stream as stream_module
from notifications.frames import encode_event
from notifications.hub import FETCH_LIMIT, Hub
from notifications.listener import Listener
from notifications.subscriber import StreamLimits
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Event, Live, read_events
from tests.notifications.conftest import read_events as read_events_of

LIMITS = StreamLimits(heartbeat_seconds=600, send_timeout_seconds=600, max_lifetime_seconds=600)


@pytest.fixture
async def own_hub(live: Live, committed_database, database_urls) -> AsyncIterator[Hub]:
    """A hub of the test's own, on its own LISTEN connection (the live fixture publishes)."""
    listener = Listener(database_urls.runtime, reconnect_seconds=0.2)
    hub = Hub(committed_database, listener, read_events=results_crud.events_after, poll_seconds=0.3)
    await hub.start()
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield hub
    finally:
        await listener.stop()
        await hub.stop()


async def test_an_idle_stream_is_written_by_the_hub_and_woken_only_for_its_end(
    live: Live, own_hub: Hub, committed_database
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.1) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(8)])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()], concurrency=2)
        run_id = uuid.UUID(run["id"])
        org = live.account.organization_id
        written: list[list[bytes]] = [[], []]
        subscribers = [own_hub.subscribe(run_id, org, 0, LIMITS) for _ in written]
        for subscriber, frames in zip(subscribers, written, strict=True):
            subscriber.terminal = TERMINAL_EVENTS
            subscriber.write_now = frames.append  # stands for the stream's ASGI send
        # Each stream's task waits for items, as a live stream's does.
        woken = [asyncio.create_task(subscriber.next_batch()) for subscriber in subscribers]
        await asyncio.sleep(0)
        await live.wait(run["id"])
        async with asyncio.timeout(30):
            first_batches = await asyncio.gather(*woken)

    async with committed_database.transaction(Tenant(org)) as session:
        rows = await results_crud.events_after(session, run_id, 0, limit=1000)
    everything = b"".join(encode_event(row.seq, row.type, row.data).encoded for row in rows)
    assert rows[-1].type == "run.finished"
    for subscriber, frames, batch in zip(subscribers, written, first_batches, strict=True):
        assert frames, "the hub wrote nothing itself"
        # What the hub wrote, then the one batch that woke the task (the end), is the log.
        assert b"".join(frames) + b"".join(item.encoded for item in batch) == everything
        assert batch[-1].type == "run.finished"
        assert subscriber.sent == rows[-1].seq - len(batch)
        assert subscriber.items == []
        own_hub.unsubscribe(subscriber)
    assert written[0] == written[1]  # the same frames, encoded once for both


def _stalled_socket(port: int) -> socket.socket:
    """A client socket whose receive window is tiny: the server's writes back up soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def _write_events(live: Live, database, run_id: uuid.UUID, count: int, size: int) -> None:
    """One event per commit, a little apart: the hub reads them a few at a time, so each
    reaches an idle stream as a write of the hub's own."""
    org = live.account.organization_id
    for position in range(count):
        event = (RESULT_RECORDED, {"position": position, "output": "x" * size})
        async with database.transaction(Tenant(org)) as session:
            await results_crud.record_events(
                session, run_id=run_id, organization_id=org, events=[event]
            )
        await asyncio.sleep(0.03)


async def _ended_run_of(live: Live, database, fake: FakeOpenAI, count: int, size: int) -> dict:
    """A run (of one case, its call kept waiting) given `count` events of `size` characters,
    then cancelled: its log ends."""
    target = await live.openai_model(fake)
    test_set = await live.test_set([{"input": "q0"}])
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    await _write_events(live, database, uuid.UUID(run["id"]), count, size)
    await live.post(f"/runs/{run['id']}/cancel", {}, expect=200)
    await live.wait(run["id"])
    return dict(run)


async def test_a_stalled_reader_is_handed_back_to_its_task_and_dropped_alone(
    live: Live, committed_database
) -> None:
    assert live.notifications is not None
    hub = live.notifications.hub
    port = int(live.base_url.rsplit(":", 1)[1])
    with FakeOpenAI(require_api_key="sk-test", latency=30) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": "q0"}])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        run_id = uuid.UUID(run["id"])
        token = await live.stream_token(run["id"])
        path = f"{live.events_url(run['id'])}?token={token}"

        hub.buffer = 5
        sock = _stalled_socket(port)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"retry: "), 10)
        assert head.startswith(b"HTTP/1.1 200")
        hub.buffer = 1000

        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=60) as client,
            client.stream("GET", live.events_url(run["id"]), params={"token": token}) as steady,
        ):
            assert steady.status_code == 200
            steady_events: list[Event] = []

            async def read_steady() -> None:
                async for event in read_events(steady):
                    steady_events.append(event)

            reading = asyncio.create_task(read_steady())
            # ~6 MB: more than the socket buffers and the server's write buffer hold.
            await _write_events(live, committed_database, run_id, 100, 60_000)
            await live.post(f"/runs/{run['id']}/cancel", {}, expect=200)
            await asyncio.wait_for(reading, 60)

        # Only now does the stalled client read: what was sent, contiguous, then the drop.
        stalled = await asyncio.wait_for(reader.read(), 60)
        writer.close()

    stored = [e for e in steady_events if e.event]
    assert stored[-1].event == "run.cancelled"
    assert [int(e.id or 0) for e in stored] == list(range(1, len(stored) + 1))
    assert sum(e.event == RESULT_RECORDED for e in stored) == 100
    ids = [int(line[4:]) for line in stalled.split(b"\n") if line.startswith(b"id: ")]
    assert ids == list(range(1, len(ids) + 1))
    assert 0 < len(ids) < len(stored)
    assert b"too far behind" in stalled
    assert stalled.endswith(b"0\r\n\r\n")  # the response ended properly
    async with asyncio.timeout(10):
        while hub.subscriber_count:  # noqa: ASYNC110 (the hub offers no event to wait on)
            await asyncio.sleep(0.05)


async def test_a_client_that_takes_nothing_loses_its_stream_and_what_was_buffered(
    live: Live, committed_database, runtime, monkeypatch
) -> None:
    """The replay of an ended run, written whole, left the end of the response waiting for a
    client that read nothing: untimed, it held the stream's slot (and the server's buffer)
    for as long as the client held the connection. Past the send timeout the stream ends and
    the connection is aborted, its buffer dropped, not closed after handing the client all."""
    monkeypatch.setattr(runtime.settings, "sse_send_timeout_seconds", 1.0)
    assert live.notifications is not None
    hub = live.notifications.hub
    port = int(live.base_url.rsplit(":", 1)[1])
    with FakeOpenAI(require_api_key="sk-test", latency=30) as fake:
        # ~6 MB of events: more than the socket buffers and the server's write buffer hold.
        run = await _ended_run_of(live, committed_database, fake, 100, 60_000)
        token = await live.stream_token(run["id"])
        path = f"{live.events_url(run['id'])}?token={token}"

        sock = _stalled_socket(port)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        async with asyncio.timeout(10):
            while not hub.subscriber_count:  # noqa: ASYNC110 (the hub offers no event to wait on)
                await asyncio.sleep(0.02)
        async with asyncio.timeout(10):  # the send timeout, and a tick of the hub's clock
            while hub.subscriber_count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        # Now the client reads: the little its own buffers hold, then the reset.
        received = b""
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(10):
                while chunk := await reader.read(65536):
                    received += chunk
        writer.close()
    assert received.startswith(b"HTTP/1.1 200")
    # What the kernel held, not the 6 MB the server had: the rest was dropped with the stream.
    assert len(received) < 5_000_000
    assert b"run.cancelled" not in received


async def test_a_replay_of_large_events_reads_fewer_at_a_time(
    live: Live, committed_database, monkeypatch
) -> None:
    """Pages were counted in events only: each stream held a page of hundreds of large events
    (an agent's steps) at once. After the first page, a page holds about REPLAY_PAGE_BYTES."""
    monkeypatch.setattr(stream_module, "REPLAY_PAGE", 20)
    monkeypatch.setattr(stream_module, "REPLAY_FIRST_PAGE", 10)
    monkeypatch.setattr(stream_module, "REPLAY_PAGE_BYTES", 100_000)
    assert live.notifications is not None
    hub = live.notifications.hub
    limits: list[int] = []
    reading = hub.read_events

    async def read_events(session, run_id, after, *, limit):
        if run_id == watched and limit != FETCH_LIMIT:  # the stream's, not the hub's own
            limits.append(limit)
        return await reading(session, run_id, after, limit=limit)

    with FakeOpenAI(require_api_key="sk-test", latency=30) as fake:
        run = await _ended_run_of(live, committed_database, fake, 60, 30_000)
        watched = uuid.UUID(run["id"])
    monkeypatch.setattr(hub, "read_events", read_events)
    token = await live.stream_token(run["id"])
    async with live.client.stream(
        "GET", live.events_url(run["id"]), params={"token": token}
    ) as response:
        events = [event async for event in read_events_of(response) if event.event]
    assert [int(event.id or 0) for event in events] == list(range(1, len(events) + 1))
    assert sum(event.event == RESULT_RECORDED for event in events) == 60
    assert events[-1].event == "run.cancelled"
    # The first page its ten; then about 100,000 bytes of 30,000-byte events.
    assert limits[0] == 10 and set(limits[1:]) <= {3, 4} and len(limits) > 10


async def test_many_live_streams_each_get_every_event_once(live: Live) -> None:
    test_set = await live.test_set([{"input": f"q{i}"} for i in range(10)])
    with FakeOpenAI(require_api_key="sk-test", latency=0.5) as fake:
        target = await live.openai_model(fake)
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        token = await live.stream_token(run["id"])
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as client:

            async def watch() -> list[Event]:
                async with client.stream(
                    "GET", live.events_url(run["id"]), params={"token": token}
                ) as response:
                    assert response.status_code == 200
                    return [event async for event in read_events(response) if event.event]

            async with asyncio.timeout(60):
                streams = await asyncio.gather(*(watch() for _ in range(20)))
    first = streams[0]
    assert first[-1].event == "run.finished"
    assert [int(e.id or 0) for e in first] == list(range(1, len(first) + 1))
    assert sum(e.event == RESULT_RECORDED for e in first) == 10
    for events in streams[1:]:
        assert [(e.id, e.event, e.data) for e in events] == [(e.id, e.event, e.data) for e in first]
