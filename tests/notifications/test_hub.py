"""The hub drops a subscriber that falls behind (and only it), and the publisher coalesces
NOTIFYs to at most one per run every 0.1 s."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from database.core import asyncpg_connect_args
from database.results import events as run_events
from notifications.frames import Item
from notifications.hub import Hub
from notifications.listener import Listener
from notifications.publisher import DELTAS_CHANNEL, EVENTS_CHANNEL, Publisher
from notifications.subscriber import TOO_SLOW, StreamEnd, StreamLimits, Subscriber
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Event, Live, read_events
from utils.metrics import metrics


@pytest.fixture
async def own_hub(live: Live, committed_database, database_urls) -> AsyncIterator[Hub]:
    """A hub of the test's own, on its own LISTEN connection (the live fixture publishes)."""
    listener = Listener(database_urls.runtime, reconnect_seconds=0.2)
    hub = Hub(
        committed_database,
        listener,
        read_events=run_events.read_after,
        buffer=1000,
        poll_seconds=0.3,
    )
    await hub.start()
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield hub
    finally:
        await listener.stop()
        await hub.stop()


# Long enough that the hub's clock adds no heartbeat and ends no stream during the test.
LIMITS = StreamLimits(heartbeat_seconds=600, send_timeout_seconds=600, max_lifetime_seconds=600)


async def test_a_subscriber_that_never_reads_is_dropped_alone(live: Live, own_hub: Hub) -> None:
    hub = own_hub
    target = await live.model(provider="demo")
    cases = 12
    test_set = await live.test_set([{"input": f"q{i}"} for i in range(cases)])
    org = live.account.organization_id
    # The run may already be recording: both subscribe from seq 0, the hub reads from there.
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    run_id = uuid.UUID(run["id"])
    subscribers_before, dropped_before = _sse_figures()
    hub.buffer = 3
    idle = hub.subscribe(run_id, org, 0, LIMITS)
    hub.buffer = 1000
    reader = hub.subscribe(run_id, org, 0, LIMITS)
    other = hub.subscribe(run_id, org, 0, LIMITS)
    assert hub.subscriber_count == 3 and hub.run_count == 1

    async def read_all(subscriber: Subscriber) -> list[Item]:
        items: list[Item] = []
        async with asyncio.timeout(30):
            while True:
                for item in await subscriber.next_batch():
                    items.append(item)
                    if item.type == "run.finished":
                        return items

    got, got_other = await asyncio.gather(read_all(reader), read_all(other))
    for items in (got, got_other):
        assert [item.seq for item in items] == list(range(1, len(items) + 1))
        assert items[0].type == "run.started"
        assert sum(item.type == "result.recorded" for item in items) == cases
    assert [i.encoded for i in got] == [i.encoded for i in got_other]

    # The idle one was dropped when its 4th item came: offered nothing more, its buffered
    # items still readable, then the stream's end (it stays known to the hub's clock until
    # its stream unsubscribes).
    assert idle.ending == TOO_SLOW
    assert hub.subscriber_count == 3
    assert _sse_figures() == (subscribers_before + 3, dropped_before + 1)
    buffered = await idle.next_batch()
    assert buffered == got[:3]
    with pytest.raises(StreamEnd):
        await asyncio.wait_for(idle.next_batch(), 5)

    hub.unsubscribe(reader)
    hub.unsubscribe(other)
    hub.unsubscribe(idle)  # already gone: harmless
    assert hub.subscriber_count == 0
    assert _sse_figures() == (subscribers_before, dropped_before + 1)

    # The run's feed goes too (once a read in flight, if any, has ended).
    async with asyncio.timeout(10):
        while hub.run_count:  # noqa: ASYNC110 (the hub offers no event to wait on)
            await asyncio.sleep(0.05)


async def _slow_run(live: Live, fake: FakeOpenAI, cases: int) -> dict:
    target = await live.openai_model(fake)
    test_set = await live.test_set(
        [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(cases)]
    )
    return await live.run(test_set, target, metric_ids=[await live.any_answer()], concurrency=4)


async def _read_all(response: httpx.Response) -> list[Event]:
    async with asyncio.timeout(60):
        return [event async for event in read_events(response)]


async def test_a_slow_stream_is_dropped_without_slowing_the_run(live: Live) -> None:
    assert live.notifications is not None
    hub = live.notifications.hub
    cases = 40
    with FakeOpenAI(require_api_key="sk-test", latency=0.05) as fake:
        # Baseline: the same run with nobody watching.
        started = time.monotonic()
        baseline_run = await _slow_run(live, fake, cases)
        await live.wait(baseline_run["id"], seconds=60)
        baseline = time.monotonic() - started

        started = time.monotonic()
        run = await _slow_run(live, fake, cases)
        token = await live.stream_token(run["id"])
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60) as client:
            hub.buffer = 2
            async with client.stream(
                "GET", live.events_url(run["id"]), params={"token": token}
            ) as slow:
                assert slow.status_code == 200
                lines = slow.aiter_lines()
                assert (await anext(lines)).startswith("retry:")  # subscribed
                hub.buffer = 1000
                async with client.stream(
                    "GET", live.events_url(run["id"]), params={"token": token}
                ) as steady:
                    assert steady.status_code == 200
                    # The slow client reads nothing until the run has ended.
                    done = await live.wait(run["id"], seconds=60)
                    elapsed = time.monotonic() - started
                    watched = [e for e in await _read_all(steady) if e.event]
                slow_events = [e async for e in read_events_from(lines)]
    assert done["status"] == "completed"
    # Generous: the slow reader must not hold the run back (it would take many times longer).
    assert elapsed < 3 * baseline + 5, (elapsed, baseline)

    # The steady reader got everything.
    assert [int(e.id or 0) for e in watched] == list(range(1, len(watched) + 1))
    assert watched[-1].event == "run.finished"
    assert sum(e.event == "result.recorded" for e in watched) == cases

    # The slow one was cut off with a comment, before the end, and can resume from its id.
    assert any("too far behind" in c for e in slow_events for c in e.comments)
    stored = [e for e in slow_events if e.event]
    assert all(e.event != "run.finished" for e in stored)
    last = int(stored[-1].id or 0) if stored else 0
    assert [int(e.id or 0) for e in stored] == list(range(1, last + 1))
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream(
            "GET",
            live.events_url(run["id"]),
            params={"token": token},
            headers={"Last-Event-ID": str(last)},
        ) as resumed,
    ):
        assert resumed.status_code == 200
        rest = [e for e in await _read_all(resumed) if e.event]
    assert [e.event for e in stored + rest] == [e.event for e in watched]
    assert hub.subscriber_count == 0


async def read_events_from(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """read_events over an already started line iterator."""

    class _Lines:
        def aiter_lines(self) -> AsyncIterator[str]:
            return lines

    async for event in read_events(_Lines()):  # type: ignore[arg-type]
        yield event


async def test_the_publisher_coalesces_notifications_per_run(live: Live, database_urls) -> None:
    received: list[tuple[float, str]] = []
    connection = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    try:
        await connection.add_listener(
            EVENTS_CHANNEL,
            lambda _c, _pid, _channel, payload: received.append((time.monotonic(), payload)),
        )
        cases = 300
        with FakeOpenAI(require_api_key="sk-test") as fake:
            target = await live.openai_model(fake)
            test_set = await live.test_set(
                [{"input": f"q{i}", "expected_output": f"q{i}"} for i in range(cases)]
            )
            run = await live.run(
                test_set, target, metric_ids=[await live.any_answer()], concurrency=20
            )
            done = await live.wait(run["id"], seconds=120)
        await asyncio.sleep(0.5)  # the last NOTIFY follows the last commit
    finally:
        await connection.close()
    assert done["status"] == "completed" and done["counts"]["done"] == cases

    times = [at for at, payload in received if payload == run["id"]]
    assert len(times) >= 1
    span = times[-1] - times[0]
    # At most one every 0.1 s (some slack for delivery jitter): ~10 per second at most.
    assert len(times) <= 2 + 12 * span, (len(times), span)
    # And far fewer than one per recorded result.
    assert len(times) < cases


async def test_a_publisher_sends_one_notify_per_run_per_interval(
    committed_database, database_urls
) -> None:
    """Unit level: many changes and deltas of one run in 0.6 s make a handful of NOTIFYs,
    and the deltas' text arrives whole and in order."""
    run_id = uuid.uuid4()  # only a payload here: no run is read
    changed: list[float] = []
    deltas: list[dict] = []
    connection = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    publisher = Publisher(committed_database)
    try:

        def on_events(_c: object, _pid: int, _channel: str, payload: str) -> None:
            if payload == str(run_id):
                changed.append(time.monotonic())

        def on_deltas(_c: object, _pid: int, _channel: str, payload: str) -> None:
            message = json.loads(payload)
            if message["run"] == str(run_id):
                deltas.append(message)

        await connection.add_listener(EVENTS_CHANNEL, on_events)
        await connection.add_listener(DELTAS_CHANNEL, on_deltas)
        await publisher.start()
        started = time.monotonic()
        pieces = [f"w{i} " for i in range(120)]
        for piece in pieces:
            publisher.runs_changed([run_id])
            publisher.delta(
                run_id, {"type": "output.delta", "position": 0, "repetition": 0, "text": piece}
            )
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        whole = "".join(pieces)

        def received() -> str:
            return "".join(e["text"] for m in deltas for e in m["events"])

        async with asyncio.timeout(10):
            while received() != whole:  # noqa: ASYNC110 (NOTIFYs offer no event to wait on)
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # nothing more is coming
    finally:
        await publisher.stop()
        await connection.close()
    most = 2 + elapsed / publisher.interval
    assert 2 <= len(changed) <= most, (len(changed), elapsed)
    assert 2 <= len(deltas) <= most, (len(deltas), elapsed)
    events = [e for m in deltas for e in m["events"]]
    assert all(e["position"] == 0 and e["type"] == "output.delta" for e in events)
    assert len(events) == len(deltas)  # one answer's tokens travel as one delta per NOTIFY


async def _wait_for_events(hub: Hub, subscriber: Subscriber, count: int) -> list[Item]:
    items: list[Item] = []
    async with asyncio.timeout(30):
        while len(items) < count:
            items += [item for item in await subscriber.next_batch() if item.seq > 0]
    return items


async def test_a_late_subscriber_replays_what_the_hub_already_delivered(
    live: Live, own_hub: Hub
) -> None:
    """The hub has delivered events 1..n to a first subscriber; a second one whose caller
    looked before those events (a stale `seen`) is told to replay up to n: the hub will not
    offer it those again, and nothing may fall between the two."""
    target = await live.model(provider="demo")
    test_set = await live.test_set([{"input": f"q{i}"} for i in range(5)])
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    run_id = uuid.UUID(run["id"])
    org = live.account.organization_id
    first = own_hub.subscribe(run_id, org, 0, LIMITS)
    delivered = await _wait_for_events(own_hub, first, 3)
    late = own_hub.subscribe(run_id, org, 0, LIMITS)  # looked at seq 0, long ago
    assert late.known >= delivered[-1].seq
    own_hub.unsubscribe(first)
    own_hub.unsubscribe(late)


async def test_the_clock_still_gives_up_on_a_dropped_stream_stuck_in_a_send(
    live: Live, own_hub: Hub
) -> None:
    """A stream dropped as too slow whose send hangs (the client takes nothing) must still
    be cancelled by the send timeout: dropping must not hide it from the hub's clock."""
    target = await live.model(provider="demo")
    test_set = await live.test_set([{"input": f"q{i}"} for i in range(12)])
    org = live.account.organization_id
    own_hub.buffer = 2
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    limits = StreamLimits(heartbeat_seconds=600, send_timeout_seconds=0.3, max_lifetime_seconds=600)
    stuck = own_hub.subscribe(uuid.UUID(run["id"]), org, 0, limits)
    async with asyncio.timeout(30):
        while stuck.ending != TOO_SLOW:  # noqa: ASYNC110 (the hub offers no event for it)
            await asyncio.sleep(0.05)
    # Dropped; now its stream is stuck writing what it had buffered.
    hung_send = asyncio.create_task(asyncio.sleep(60))  # stands for a write nobody reads
    stuck.task = hung_send
    stuck.sending_since = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await hung_send
    own_hub.unsubscribe(stuck)


def _sse_figures() -> tuple[float, float]:
    """The process's subscriber gauge and dropped counter, as /metrics reports them."""
    registry = metrics().registry
    subscribers = registry.get_sample_value("assay_sse_subscribers") or 0.0
    dropped = registry.get_sample_value("assay_sse_subscribers_dropped_total") or 0.0
    return subscribers, dropped
