"""An open stream ends soon after its credential stops being good: the hub asks again, every
recheck interval, about what opened each stream (a login session or an API key, by stream token
or header), once per distinct credential. Over real HTTP, against a live server, with the
interval set small; and the recheck alone, against the real database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from notifications import stream
from notifications.recheck import Credential, CredentialRecheck, Issuer
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import bearer, create_api_key, login
from tests.notifications.conftest import Event, Live, read_events

RECHECK_SECONDS = 0.2
# Several intervals and ticks of the hub's clock (0.25 s), with room for a loaded machine.
ENDS_WITHIN = 5.0


@pytest.fixture
def recheck_often(runtime, monkeypatch) -> None:
    monkeypatch.setattr(runtime.settings, "sse_recheck_seconds", RECHECK_SECONDS)


@dataclass
class Watching:
    """A stream being read in the background: its events so far, and whether it has ended."""

    events: list[Event] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    first_event: asyncio.Event = field(default_factory=asyncio.Event)  # one with a type
    ended_at: float | None = None
    task: asyncio.Task[None] | None = None

    @property
    def comments(self) -> list[str]:
        return [comment for event in self.events for comment in event.comments]

    async def ended(self, within: float) -> float:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), within)
        assert self.ended_at is not None
        return self.ended_at


@asynccontextmanager
async def watching(
    live: Live,
    run_id: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Watching]:
    watch = Watching()

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=60) as client,
            client.stream("GET", live.events_url(run_id), params=params, headers=headers) as sse,
        ):
            assert sse.status_code == 200, await sse.aread()
            async for event in read_events(sse):
                watch.events.append(event)
                watch.opened.set()
                if event.event:
                    watch.first_event.set()
        watch.ended_at = time.monotonic()

    watch.task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(_first(watch.opened, watch.task), 15)
        yield watch
    finally:
        watch.task.cancel()
        await asyncio.gather(watch.task, return_exceptions=True)


async def _first(opened: asyncio.Event, task: asyncio.Task[None]) -> None:
    """The stream has sent its first bytes (or its reader failed: raise that)."""
    waiting = asyncio.ensure_future(opened.wait())
    await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()


@asynccontextmanager
async def running_run(live: Live) -> AsyncIterator[str]:
    """A run that stays under way (its one model call hangs) until cancelled at the end."""
    with FakeOpenAI(require_api_key="sk-test", latency=120) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": "q"}])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        try:
            yield run["id"]
        finally:
            await live.post(f"/runs/{run['id']}/cancel", {})


async def _stream_token(live: Live, run_id: str, headers: Mapping[str, str]) -> str:
    response = await live.client.post(f"/api/v1/runs/{run_id}/stream-token", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def _revoke(live: Live, key: dict) -> float:
    revoked = await live.client.delete(
        f"/api/v1/organizations/{live.account.organization_id}/api-keys/{key['id']}",
        headers=live.account.headers,
    )
    assert revoked.status_code == 204, revoked.text
    return time.monotonic()


async def test_streams_of_a_revoked_api_key_end_with_the_reason(
    live: Live, recheck_often: None
) -> None:
    key = await create_api_key(live.client, live.account, "viewer")
    async with running_run(live) as run_id:
        token = await _stream_token(live, run_id, bearer(key["key"]))
        async with (
            watching(live, run_id, params={"token": token}) as by_token,
            watching(live, run_id, headers={"X-API-Key": key["key"]}) as by_header,
        ):
            revoked_at = await _revoke(live, key)
            for watch in (by_token, by_header):
                assert await watch.ended(ENDS_WITHIN) - revoked_at < ENDS_WITHIN
                assert "the API key this stream was opened with is no longer valid" in (
                    watch.comments
                )
                assert not any(event.event == "run.cancelled" for event in watch.events)


async def test_a_stream_of_a_session_that_logs_out_ends_with_the_reason(
    live: Live, recheck_often: None
) -> None:
    signed_in = await login(live.client, live.account.email)
    assert signed_in.status_code == 200, signed_in.text
    tokens = signed_in.json()
    async with running_run(live) as run_id:
        token = await _stream_token(live, run_id, bearer(tokens["access_token"]))
        async with watching(live, run_id, params={"token": token}) as watch:
            await asyncio.sleep(3 * RECHECK_SECONDS)  # rechecked while good: it stays open
            assert watch.ended_at is None
            logged_out = await live.client.post(
                "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}
            )
            assert logged_out.status_code == 204, logged_out.text
            logged_out_at = time.monotonic()
            assert await watch.ended(ENDS_WITHIN) - logged_out_at < ENDS_WITHIN
            assert "the login session this stream was opened with has ended" in watch.comments


async def test_streams_whose_credential_stays_good_keep_going(
    live: Live, recheck_often: None
) -> None:
    kept = await create_api_key(live.client, live.account, "viewer")
    doomed = await create_api_key(live.client, live.account, "viewer")
    async with running_run(live) as run_id:
        token = await _stream_token(live, run_id, live.account.headers)
        kept_token = await _stream_token(live, run_id, bearer(kept["key"]))
        doomed_token = await _stream_token(live, run_id, bearer(doomed["key"]))
        async with (
            watching(live, run_id, params={"token": token}) as by_session,
            watching(live, run_id, params={"token": kept_token}) as by_key,
            watching(live, run_id, headers=live.account.headers) as by_header,
            watching(live, run_id, params={"token": doomed_token}) as by_revoked,
        ):
            await _revoke(live, doomed)
            await by_revoked.ended(ENDS_WITHIN)
            await asyncio.sleep(5 * RECHECK_SECONDS)  # more rounds, asked about the good ones
            await live.post(f"/runs/{run_id}/cancel", {}, expect=200)
            for watch in (by_session, by_key, by_header):
                await watch.ended(ENDS_WITHIN)  # at the run's end, not before
                assert [e.event for e in watch.events if e.event][-1] == "run.cancelled"
                assert not any("no longer" in c or "ended" in c for c in watch.comments)


# --- the recheck alone ----------------------------------------------------------------------


@dataclass(eq=False)
class _Stream:
    credential: Credential | None
    ending: str | None = None

    def revoke(self, reason: str) -> None:
        self.ending = self.ending or reason


class _Check:
    """Says every issuer of `ended` is no longer good; fails with a real database error on its
    first `failures` calls; records the batches it was asked about."""

    def __init__(self, ended: set[Issuer], failures: int = 0) -> None:
        self.ended = ended
        self.failures = failures
        self.asked: list[list[Issuer]] = []

    async def __call__(self, session: AsyncSession, issuers: Sequence[Issuer]) -> dict[Issuer, str]:
        self.asked.append(list(issuers))
        if len(self.asked) <= self.failures:
            await session.execute(text("SELECT 1 / 0"))
        return {issuer: "gone" for issuer in issuers if issuer in self.ended}


async def _round(recheck: CredentialRecheck, streams: list[_Stream], now: float) -> bool:
    """Whether a round was due (and ran)."""
    started = recheck.tick(streams, now)
    if started is not None:
        await started
    return started is not None


async def test_one_question_per_distinct_issuer_per_interval(committed_database) -> None:
    organization = uuid.uuid4()
    issuers = [Issuer(organization, api_key_id=uuid.uuid4()) for _ in range(3)]
    check = _Check(ended={issuers[0]})
    streams = [_Stream(Credential(issuers[i % 3], check, recheck_seconds=60)) for i in range(3000)]
    recheck = CredentialRecheck(committed_database)

    assert await _round(recheck, streams, now=1000.0)
    assert len(check.asked) == 1
    assert sorted(check.asked[0], key=str) == sorted(issuers, key=str)
    assert all(s.ending == "gone" for s in streams[0::3])
    assert not any(s.ending for i, s in enumerate(streams) if i % 3)

    assert not await _round(recheck, streams, now=1059.0)  # within the interval
    assert len(check.asked) == 1
    assert await _round(recheck, streams, now=1060.0)
    # The ended streams' issuer is not asked about again.
    assert sorted(check.asked[1], key=str) == sorted(issuers[1:], key=str)


async def test_a_failed_check_ends_nothing_and_is_asked_again(committed_database) -> None:
    issuer = Issuer(uuid.uuid4(), user_id=uuid.uuid4(), session_id=uuid.uuid4())
    check = _Check(ended={issuer}, failures=1)
    streams = [_Stream(Credential(issuer, check, recheck_seconds=1))]
    recheck = CredentialRecheck(committed_database)

    assert await _round(recheck, streams, now=10.0)
    assert len(check.asked) == 1
    assert streams[0].ending is None  # the database failed: the stream stays open
    assert await _round(recheck, streams, now=11.0)
    assert len(check.asked) == 2
    assert streams[0].ending == "gone"


@pytest.fixture
def slow_replay(live: Live, monkeypatch) -> None:
    """A long log read slowly: pages of two events, each read in 0.3 s."""
    monkeypatch.setattr(stream, "REPLAY_PAGE", 2)
    assert live.notifications is not None
    hub = live.notifications.hub
    read = hub.read_events

    async def slowly(session: AsyncSession, run_id: uuid.UUID, after: int, *, limit: int):
        await asyncio.sleep(0.3)
        return await read(session, run_id, after, limit=limit)

    monkeypatch.setattr(hub, "read_events", slowly)


async def _finished_run(live: Live, cases: int) -> str:
    with FakeOpenAI(require_api_key="sk-test") as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(cases)])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        await live.wait(run["id"])
    return str(run["id"])


async def test_a_stream_revoked_while_it_replays_its_log_stops_replaying(
    live: Live, recheck_often: None, slow_replay: None
) -> None:
    """Revocation ends a stream between two pages of its replay, not after the whole log."""
    run_id = await _finished_run(live, cases=20)
    key = await create_api_key(live.client, live.account, "viewer")
    async with watching(live, run_id, headers={"X-API-Key": key["key"]}) as watch:
        await asyncio.wait_for(watch.first_event.wait(), ENDS_WITHIN)
        revoked_at = await _revoke(live, key)
        ended_at = await watch.ended(ENDS_WITHIN)
    replayed = [event for event in watch.events if event.event]
    assert "the API key this stream was opened with is no longer valid" in watch.comments
    assert replayed[-1].event != "run.finished"  # the log was not sent to its end
    assert ended_at - revoked_at < 2.0  # a recheck and a page, not the log's 7 s


async def test_a_stream_ends_at_its_lifetime_even_while_replaying(
    live: Live, runtime, monkeypatch, slow_replay: None
) -> None:
    monkeypatch.setattr(runtime.settings, "sse_max_lifetime_seconds", 1.0)
    run_id = await _finished_run(live, cases=20)
    token = await _stream_token(live, run_id, live.account.headers)
    started = time.monotonic()
    async with watching(live, run_id, params={"token": token}) as watch:
        ended_at = await watch.ended(ENDS_WITHIN)
    assert ended_at - started < 2.5  # its lifetime and a page, not the log's 7 s
    assert not any(event.event == "run.finished" for event in watch.events)
