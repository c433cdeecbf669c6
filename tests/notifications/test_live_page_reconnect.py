"""The live run page (app/static/live_run.js) in a real headless Chromium, against the live
server: EventSource gives up for good on any answer but 200, so the page itself reopens the
stream after a refusal (here the organization's stream cap, a 429), resuming after the last
event it has; and says plainly when its link is no longer good (a 401), which no retry mends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.browser import DevTools, chromium, find_browser
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import add_member
from tests.notifications.conftest import Live

pytestmark = pytest.mark.slow

CASES = 6
HOSTILE = '<img src=x onerror="window.pwned=1">'
EXPIRED = "This link has expired or is no longer valid: a new one is needed to follow the run."

PAGE_STATE = """(() => {
  const rows = Array.from(document.querySelectorAll("#results tbody tr"));
  const connection = document.getElementById("connection");
  const status = document.getElementById("status");
  return {
    status: status ? status.dataset.status : null,
    keys: rows.map((r) => r.dataset.key),
    finals: rows.filter((r) => ["passed", "failed", "errored"].includes(r.className)).length,
    connection: connection ? connection.textContent : null,
    state: connection ? connection.dataset.state || null : null,
    images: document.querySelectorAll("img").length,
    pwned: window.pwned || null,
  };
})()"""


async def _until(
    page: DevTools, done: Callable[[dict[str, Any]], bool], seconds: float = 60
) -> dict[str, Any]:
    """The page's state, polled until `done` holds (fails the test after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        state = await page.evaluate(PAGE_STATE)
        if state and done(state):
            return dict(state)
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)


def _given_up(state: dict[str, Any]) -> bool:
    """The page's stream is neither open nor being reopened by EventSource itself."""
    return state["state"] not in (None, "open", "reconnecting") or (
        state["connection"] == "(stream closed)"  # how the page once stopped for good
    )


async def _open_page(page: DevTools, live: Live, run_id: str, token: str) -> None:
    for domain in ("Page", "Runtime", "Network"):
        await page.send(f"{domain}.enable")
    await page.send("Page.navigate", {"url": f"{live.base_url}/public/runs/{run_id}?token={token}"})


def _resumed_after(page: DevTools, run_id: str) -> list[str]:
    """The `last_event_id` of each events request the page made (empty: none given)."""
    urls = [
        sent["request"]["url"]
        for sent in page.params_of("Network.requestWillBeSent")
        if f"/public/runs/{run_id}/events" in sent["request"]["url"]
    ]
    return [parse_qs(urlsplit(url).query).get("last_event_id", [""])[0] for url in urls]


async def test_the_page_reopens_its_stream_after_a_refusal(
    live: Live, runtime, monkeypatch, tmp_path
) -> None:
    binary = find_browser()
    # Each stream lives 2 s, so the page's EventSource reconnects by itself mid-run.
    monkeypatch.setattr(runtime.settings, "sse_max_lifetime_seconds", 2.0)
    monkeypatch.setattr(runtime.settings, "sse_retry_ms", 200)
    monkeypatch.setattr(runtime.settings, "sse_max_streams_per_organization", 2)
    with FakeOpenAI(require_api_key="sk-test", latency=1.0) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"{HOSTILE} q{i}"} for i in range(CASES)])
        metric = await live.any_answer()
        run = await live.run(test_set, target, metric_ids=[metric], concurrency=1)
        token = await live.stream_token(run["id"])
        async with chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as page:
            await _open_page(page, live, run["id"], token)
            await _until(page, lambda state: len(state["keys"]) >= 1)
            # Another stream of the organization (one that lives on) takes the last place:
            # the page's next reconnect is refused (429), which EventSource never retries.
            monkeypatch.setattr(runtime.settings, "sse_max_lifetime_seconds", 600.0)
            async with (
                httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
                client.stream("GET", live.events_url(run["id"]), params={"token": token}) as held,
            ):
                assert held.status_code == 200
                monkeypatch.setattr(runtime.settings, "sse_max_streams_per_organization", 1)
                monkeypatch.setattr(runtime.settings, "sse_max_lifetime_seconds", 2.0)
                refused = await _until(page, _given_up)
                assert refused["state"] == "waiting", refused
            fake.latency = 0.05
            final = await _until(
                page, lambda state: state["status"] == "completed" and state["finals"] == CASES
            )
            resumed = _resumed_after(page, run["id"])

    assert refused["connection"].startswith("(cannot connect: retrying in "), refused
    assert final["keys"] == [f"{position}:0" for position in range(CASES)], final
    assert final["connection"] == "", final
    # The page's own new stream resumed after the last event it had (not from the start).
    assert [after for after in resumed[1:] if after], resumed
    assert all(int(after) > 0 for after in resumed if after), resumed
    assert (final["images"], final["pwned"]) == (0, None), final


async def test_the_page_says_its_link_is_no_longer_good(
    live: Live, runtime, monkeypatch, tmp_path
) -> None:
    binary = find_browser()
    monkeypatch.setattr(runtime.settings, "sse_max_lifetime_seconds", 2.0)
    monkeypatch.setattr(runtime.settings, "sse_retry_ms", 200)
    member = await add_member(live.client, live.account, "member")
    with FakeOpenAI(require_api_key="sk-test", latency=1.0) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(CASES)])
        metric = await live.any_answer()
        run = await live.run(test_set, target, metric_ids=[metric], concurrency=1)
        issued = await live.client.post(
            f"/api/v1/runs/{run['id']}/stream-token", headers=member.headers
        )
        assert issued.status_code == 200, issued.text
        async with chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as page:
            await _open_page(page, live, run["id"], issued.json()["token"])
            await _until(page, lambda state: len(state["keys"]) >= 1)
            # The credential that issued the token ends (as the token's own expiry would):
            # every reopening of the stream is now a 401.
            removed = await live.client.delete(
                f"/api/v1/organizations/{live.account.organization_id}/members/{member.user_id}",
                headers=live.account.headers,
            )
            assert removed.status_code == 204, removed.text
            told = await _until(page, _given_up)
            fake.latency = 0.0
        await live.wait(run["id"])

    assert told["state"] == "expired", told
    assert told["connection"] == EXPIRED, told
    assert told["status"] == "running", told
