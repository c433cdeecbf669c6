"""Streams open at once on one process are capped per organization (429) and in all (503),
each with Retry-After: one tenant cannot take every socket, nor the replays' share of the
pool. A closed stream gives its place back. Over real HTTP, against a live server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import assert_problem
from tests.notifications.conftest import Live


@contextlib.asynccontextmanager
async def _running_run(live: Live) -> AsyncIterator[str]:
    """A run under way (its one model call hangs) until cancelled at the end."""
    with FakeOpenAI(require_api_key="sk-test", latency=120) as fake:
        target = await live.openai_model(fake)
        run = await live.run(
            await live.test_set([{"input": "q"}]), target, metric_ids=[await live.any_answer()]
        )
        try:
            yield run["id"]
        finally:
            await live.post(f"/runs/{run['id']}/cancel", {})


async def _open(
    stack: contextlib.AsyncExitStack, live: Live, run_id: str, headers: dict[str, str]
) -> httpx.Response:
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=live.base_url, timeout=30))
    response = await stack.enter_async_context(
        client.stream("GET", live.events_url(run_id), headers=headers)
    )
    if response.status_code == 200:
        # The stream is open once its first bytes come (its reader kept, so as not to close it).
        reader = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        stack.push_async_callback(reader.aclose)
        await anext(reader)
    else:
        await response.aread()
    return response


async def test_an_organization_past_its_streams_is_refused_until_one_closes(
    live: Live, runtime, monkeypatch
) -> None:
    monkeypatch.setattr(runtime.settings, "sse_max_streams_per_organization", 2)
    async with _running_run(live) as run_id, contextlib.AsyncExitStack() as outer:
        async with contextlib.AsyncExitStack() as stack:
            opened = [await _open(stack, live, run_id, live.account.headers) for _ in range(2)]
            assert [r.status_code for r in opened] == [200, 200]
            refused = await _open(outer, live, run_id, live.account.headers)
            problem = assert_problem(refused, 429)
            assert "2 streams open" in problem["detail"] and refused.headers["retry-after"]
        # Those two closed: their places are free again.
        again = await _open(outer, live, run_id, live.account.headers)
        assert again.status_code == 200


async def test_a_server_past_its_streams_refuses_more(live: Live, runtime, monkeypatch) -> None:
    """Within its organization's share, a stream is refused when the process has no room."""
    monkeypatch.setattr(runtime.settings, "sse_max_streams", 1)
    async with _running_run(live) as run_id, contextlib.AsyncExitStack() as stack:
        assert (await _open(stack, live, run_id, live.account.headers)).status_code == 200
        refused = await _open(stack, live, run_id, live.account.headers)
        assert "1 streams open" in assert_problem(refused, 503)["detail"]
        assert refused.headers["retry-after"]
