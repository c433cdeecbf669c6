"""Replay and resume of a run's event stream at every seam: from the start, after a
disconnect (Last-Event-ID), joining mid-run, after the end; heartbeats, the connection's
lifetime, cancel, and a lost LISTEN connection. Each stream is checked against the stored
events (the run_events table): ids 1..N with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from database.results import events as run_events
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Event, Live, read_events

TERMINAL_EVENTS = {"run.finished", "run.cancelled"}
READ_SECONDS = 60.0  # a generous bound for reading one stream


@dataclass
class Stream:
    status: int
    events: list[Event] = field(default_factory=list)  # named events (with an id)
    comments: list[str] = field(default_factory=list)
    items: list[Event] = field(default_factory=list)  # everything, in order
    ended: bool = False  # the server closed the stream (not us)


async def read_stream(
    live: Live,
    run_id: str,
    token: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    on_event: Callable[[list[Event]], Awaitable[None]] | None = None,
) -> Stream:
    """Opens the run's stream; reads to its end, or `stop_after` named events and closes.
    `on_event` is called with the named events so far after each one arrives."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream(
            "GET", live.events_url(run_id), params={"token": token}, headers=headers
        ) as response,
    ):
        stream = Stream(status=response.status_code)
        if response.status_code != 200:
            await response.aread()
            return stream
        async with asyncio.timeout(READ_SECONDS):
            async for event in read_events(response):
                stream.items.append(event)
                stream.comments.extend(event.comments)
                if event.event is not None:
                    stream.events.append(event)
                    if on_event is not None:
                        await on_event(stream.events)
                    if stop_after is not None and len(stream.events) >= stop_after:
                        return stream
            stream.ended = True
    return stream


async def stored_events(owner_engine: AsyncEngine, run_id: str) -> list[tuple[int, str, Any]]:
    """The run's events as committed, as the log's reader shows them (read as the owner, past
    tenancy)."""
    async with AsyncSession(owner_engine) as session:
        rows = await run_events.read_after(session, uuid.UUID(run_id), 0, limit=1_000_000)
    return [(row.seq, row.type, row.data) for row in rows]


def as_tuples(events: list[Event]) -> list[tuple[int, str, Any]]:
    assert all(e.id is not None and e.event is not None for e in events), events
    return [(int(str(e.id)), str(e.event), e.data) for e in events]


def assert_complete(seen: list[Event], stored: list[tuple[int, str, Any]], cases: int) -> None:
    """The union of what was read is the stored log exactly: 1..N, each once, in order."""
    got = as_tuples(seen)
    ids = [seq for seq, _, _ in got]
    assert ids == list(range(1, len(ids) + 1)), ids
    assert got == stored
    kinds = [kind for _, kind, _ in got]
    assert kinds[0] == "run.started"
    assert kinds.count("run.started") == 1
    assert sum(kind in TERMINAL_EVENTS for kind in kinds) == 1
    assert kinds[-1] in TERMINAL_EVENTS
    positions = sorted(data["position"] for _, kind, data in got if kind == "result.recorded")
    assert len(positions) == cases
    assert len(set(positions)) == cases


async def start_run(
    live: Live, fake: FakeOpenAI, cases: int, *, concurrency: int = 1
) -> tuple[str, str]:
    target = await live.openai_model(fake)
    test_set = await live.test_set(
        [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(cases)]
    )
    metric = await live.metric("contains")
    run = await live.run(test_set, target, metric_ids=[metric], concurrency=concurrency)
    return str(run["id"]), await live.stream_token(run["id"])


async def wait_for_stored(owner_engine: AsyncEngine, run_id: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(await stored_events(owner_engine, run_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} events stored after 30 s"
        await asyncio.sleep(0.05)


async def cancel_quietly(live: Live, run_id: str) -> None:
    """Ends a slow run so the worker pool stops promptly at teardown."""
    await live.post(f"/runs/{run_id}/cancel", {})


# --- from the start ----------------------------------------------------------------------


async def test_subscribing_while_queued_receives_every_event_once(
    live: Live, owner_engine: AsyncEngine
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.03) as fake:
        run_id, token = await start_run(live, fake, 12)
        stream = await read_stream(live, run_id, token)
        assert stream.status == 200
        assert stream.ended
        assert (await live.get(f"/runs/{run_id}"))["status"] == "completed"
        assert_complete(stream.events, await stored_events(owner_engine, run_id), 12)
        assert stream.events[-1].event == "run.finished"
        assert stream.events[-1].data["done"] == 12


# --- disconnect and resume ----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 5])
async def test_resuming_with_last_event_id_receives_exactly_the_rest(
    live: Live, owner_engine: AsyncEngine, k: int
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.1) as fake:
        run_id, token = await start_run(live, fake, 15)
        first = await read_stream(live, run_id, token, stop_after=k)
        assert len(first.events) == k
        assert not first.ended
        last = first.events[-1].id
        assert last == str(k)
        # the seam is mid-run: the run has not ended when the client comes back
        assert (await live.get(f"/runs/{run_id}"))["status"] in {"queued", "running"}
        rest = await read_stream(live, run_id, token, last_event_id=last)
        assert rest.status == 200
        assert rest.ended
        assert rest.events[0].id == str(k + 1)
        assert_complete(first.events + rest.events, await stored_events(owner_engine, run_id), 15)


async def test_several_disconnects_in_a_row_lose_and_repeat_nothing(
    live: Live, owner_engine: AsyncEngine
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.05) as fake:
        run_id, token = await start_run(live, fake, 12)
        seen: list[Event] = []
        last: str | None = None
        reconnects = 0
        while True:
            part = await read_stream(live, run_id, token, last_event_id=last, stop_after=3)
            if part.status == 204:
                break
            assert part.status == 200
            seen.extend(part.events)
            if part.ended or (seen and seen[-1].event in TERMINAL_EVENTS):
                break
            last = part.events[-1].id if part.events else last
            reconnects += 1
            assert reconnects < 200
        assert reconnects >= 3
        assert_complete(seen, await stored_events(owner_engine, run_id), 12)


# --- joining mid-run ---------------------------------------------------------------------


async def test_connecting_mid_run_replays_everything_then_goes_live(
    live: Live, owner_engine: AsyncEngine
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.1) as fake:
        run_id, token = await start_run(live, fake, 15)
        await wait_for_stored(owner_engine, run_id, 5)
        stored_before = len(await stored_events(owner_engine, run_id))
        assert (await live.get(f"/runs/{run_id}"))["status"] == "running"
        stream = await read_stream(live, run_id, token)
        assert stream.status == 200
        assert stream.ended
        stored = await stored_events(owner_engine, run_id)
        assert len(stored) > stored_before  # some of it arrived live
        assert_complete(stream.events, stored, 15)


# --- after the end -----------------------------------------------------------------------


async def test_after_the_end_the_rest_or_204_or_the_full_replay(
    live: Live, owner_engine: AsyncEngine
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.01) as fake:
        run_id, token = await start_run(live, fake, 6, concurrency=2)
        assert (await live.wait(run_id))["status"] == "completed"
        stored = await stored_events(owner_engine, run_id)
        n = len(stored)
        assert n >= 8

        for after in (0, 1, n - 3, n - 1):
            rest = await read_stream(live, run_id, token, last_event_id=str(after))
            assert rest.status == 200
            assert rest.ended
            assert as_tuples(rest.events) == stored[after:]

        for after in (n, n + 5):
            done = await read_stream(live, run_id, token, last_event_id=str(after))
            assert done.status == 204
            assert done.events == []

        full = await read_stream(live, run_id, token)
        assert full.status == 200
        assert full.ended
        assert full.items[0].retry is not None
        assert_complete(full.events, stored, 6)

        bad = await read_stream(live, run_id, token, last_event_id="abc")
        assert bad.status == 422


async def test_an_id_past_the_last_event_of_a_run_under_way_is_a_422(live: Live) -> None:
    """Its stream would skip every event up to that id, the run's end among them, and stay
    open until its lifetime ran out."""
    with FakeOpenAI(require_api_key="sk-test", latency=0.2) as fake:
        run_id, token = await start_run(live, fake, 10)
        past = await read_stream(live, run_id, token, last_event_id="999")
        assert past.status == 422
        assert (await live.wait(run_id))["status"] == "completed"


# --- heartbeats and lifetime -------------------------------------------------------------


async def test_a_quiet_stream_receives_heartbeats(live: Live) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=6) as fake:
        run_id, token = await start_run(live, fake, 1)
        heartbeats: list[float] = []
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", live.events_url(run_id), params={"token": token}) as response,
        ):
            assert response.status_code == 200
            opened = time.monotonic()
            async with asyncio.timeout(4):  # heartbeats every 0.5 s
                async for event in read_events(response):
                    assert event.event not in TERMINAL_EVENTS  # the run is still going
                    if event.heartbeat:
                        # An event (a page's EventSource sees it, as no comment), with no id:
                        # Last-Event-ID stays on the last stored event.
                        assert (event.id, event.data, event.comments) == (None, {}, [])
                        heartbeats.append(time.monotonic() - opened)
                        if len(heartbeats) >= 2:
                            break
        assert len(heartbeats) >= 2
        assert heartbeats[0] < 2.5
        await cancel_quietly(live, run_id)


async def test_a_stream_ends_itself_at_its_lifetime(
    live: Live, runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.settings, "sse_max_lifetime_seconds", 1.5)
    with FakeOpenAI(require_api_key="sk-test", latency=20) as fake:
        run_id, token = await start_run(live, fake, 1)
        opened = time.monotonic()
        stream = await read_stream(live, run_id, token)
        took = time.monotonic() - opened
        assert stream.status == 200
        assert stream.ended
        assert 1.0 < took < 12.0
        assert stream.items[0].retry == runtime.settings.sse_retry_ms
        assert stream.items[-1].event is None
        assert any("lifetime" in c for c in stream.items[-1].comments)
        assert stream.items[-1].retry == runtime.settings.sse_retry_ms  # the retry: hint
        assert all(e.event not in TERMINAL_EVENTS for e in stream.events)
        # what it had is what was stored, and the client may come back for the rest
        assert stream.events[0].event == "run.started"
        ids = [int(str(e.id)) for e in stream.events]
        assert ids == list(range(1, len(ids) + 1))
        await cancel_quietly(live, run_id)


# --- cancel ------------------------------------------------------------------------------


async def test_cancelling_ends_the_stream_with_run_cancelled(
    live: Live, owner_engine: AsyncEngine
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.2) as fake:
        run_id, token = await start_run(live, fake, 20)
        first = await read_stream(live, run_id, token, stop_after=2)
        assert not first.ended
        response = await live.post(f"/runs/{run_id}/cancel", {}, expect=200)
        assert response.json()["status"] == "cancelled"
        rest = await read_stream(live, run_id, token, last_event_id=first.events[-1].id)
        assert rest.status == 200
        assert rest.ended
        seen = first.events + rest.events
        assert seen[-1].event == "run.cancelled"
        assert seen[-1].data["status"] == "cancelled"
        got = as_tuples(seen)
        assert [seq for seq, _, _ in got] == list(range(1, len(got) + 1))
        stored = await stored_events(owner_engine, run_id)
        assert got == stored[: len(got)]
        assert [kind for _, kind, _ in stored].count("run.cancelled") == 1
        assert seen[-1].data["done"] < 20


async def test_a_stream_open_during_cancel_ends_with_run_cancelled(
    live: Live, owner_engine: AsyncEngine
) -> None:
    with FakeOpenAI(require_api_key="sk-test", latency=0.2) as fake:
        run_id, token = await start_run(live, fake, 20)

        async def cancel_early(seen: list[Event]) -> None:
            if seen[-1].event == "result.recorded" and len(seen) <= 3:
                await live.post(f"/runs/{run_id}/cancel", {}, expect=200)

        stream = await read_stream(live, run_id, token, on_event=cancel_early)
        assert stream.status == 200
        assert stream.ended
        seen = stream.events
        assert seen[-1].event == "run.cancelled"
        got = as_tuples(seen)
        assert [seq for seq, _, _ in got] == list(range(1, len(got) + 1))
        stored = await stored_events(owner_engine, run_id)
        assert got == stored[: len(got)]


# --- the LISTEN connection dies ----------------------------------------------------------


async def listen_pids(owner_engine: AsyncEngine) -> set[int]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        )
        return {int(pid) for (pid,) in rows.all()}


async def test_the_stream_survives_the_listener_losing_its_connection(
    live: Live, owner_engine: AsyncEngine
) -> None:
    assert live.notifications is not None
    hub = live.notifications.hub
    # Only the listener's reconnect (and its NOTIFYs) may deliver: no poll to paper over it.
    hub.poll_seconds = 3600
    await asyncio.sleep(0.7)  # the poller's current (0.5 s) sleep ends; the next is long
    live.notifications.listener.reconnect_seconds = 0.3
    before = await listen_pids(owner_engine)
    assert before
    with FakeOpenAI(require_api_key="sk-test", latency=0.1) as fake:
        run_id, token = await start_run(live, fake, 15)
        killed_at: list[int] = []  # how many events had arrived when the listener was killed

        async def kill_listener(seen: list[Event]) -> None:
            if killed_at or len(seen) < 3:
                return
            async with owner_engine.connect() as conn:
                count = await conn.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid))"
                        " FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                        " AND pid <> pg_backend_pid()"
                    )
                )
            assert count and count >= 1
            killed_at.append(len(seen))

        stream = await read_stream(live, run_id, token, on_event=kill_listener)
        assert stream.status == 200
        seen = stream.events
        assert killed_at
        assert len(seen) > killed_at[0]  # events arrived after the kill
        assert_complete(seen, await stored_events(owner_engine, run_id), 15)
        assert seen[-1].event == "run.finished"
        now = await listen_pids(owner_engine)
        assert now and not (now & before)  # the listener came back on a new connection


async def test_a_log_pruned_under_a_replay_ends_the_stream_saying_so(
    live: Live, owner_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention deletes a run's log whole; one deleted between two pages of a replay left
    the stream going live with part of the log and no end: it idled to its lifetime, the run
    shown stopped partway."""
    from notifications import stream as streams
    from notifications.service import get_notifications

    monkeypatch.setattr(streams, "REPLAY_FIRST_PAGE", 2)
    monkeypatch.setattr(streams, "REPLAY_PAGE", 2)
    with FakeOpenAI(require_api_key="sk-test", latency=0.01) as fake:
        run_id, token = await start_run(live, fake, 4, concurrency=2)
        assert (await live.wait(run_id))["status"] == "completed"
    hub = get_notifications().hub
    reading = hub.read_events
    pages = 0

    async def pruned_after_the_first_page(session: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        if pages == 2:  # as the prune does, between two pages
            async with owner_engine.begin() as connection:
                await connection.execute(
                    text("DELETE FROM run_events WHERE run_id = :id"), {"id": run_id}
                )
        return await reading(session, *args, **kwargs)

    monkeypatch.setattr(hub, "read_events", pruned_after_the_first_page)
    cut = await read_stream(live, run_id, token)
    assert cut.status == 200 and cut.ended
    assert [int(str(event.id)) for event in cut.events] == [1, 2]
    assert "the run's events were pruned" in cut.comments
    monkeypatch.setattr(hub, "read_events", reading)
    assert (await read_stream(live, run_id, token, last_event_id="2")).status == 204
