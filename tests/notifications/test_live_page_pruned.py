"""The live run page (app/static/live_run.js) in a real headless Chromium, on a finished run whose
events retention has pruned: the stream answers 204, which EventSource never retries, and which
no retry of the page mends either. The page says the run has ended and its events are no longer
kept, and stops asking."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from app.engine.maintenance import RetentionPolicy, prune
from tests.e2e.browser import DevTools, chromium, find_browser
from tests.fakes.openai_server import FakeOpenAI
from tests.notifications.conftest import Live
from tests.notifications.test_live_page_reconnect import PAGE_STATE, _open_page, _until

pytestmark = pytest.mark.slow

# Longer than the page's first few retry delays (2 s, 4 s, 8 s, each at most a quarter more).
QUIET_SECONDS = 20


def _events_requests(page: DevTools, run_id: str) -> int:
    return sum(
        f"/public/runs/{run_id}/events" in sent["request"]["url"]
        for sent in page.params_of("Network.requestWillBeSent")
    )


async def test_the_page_stops_on_a_run_whose_events_were_pruned(
    live: Live, committed_database, owner_engine, tmp_path
) -> None:
    binary = find_browser()
    with FakeOpenAI(require_api_key="sk-test") as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(3)])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
        await live.wait(run["id"])
    async with owner_engine.begin() as conn:  # it ended long ago, past the events' period
        await conn.execute(
            text("UPDATE runs SET finished_at = now() - interval '40 days' WHERE id = :id"),
            {"id": run["id"]},
        )
    report = await prune(committed_database.transaction, RetentionPolicy(run_events_days=30))
    assert report.pruned["run_events"] > 0, report
    token = await live.stream_token(run["id"])

    async with chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as page:
        await _open_page(page, live, run["id"], token)
        told = await _until(
            page, lambda state: state["state"] not in (None, "open", "reconnecting")
        )
        asked = _events_requests(page, run["id"])
        deadline = time.monotonic() + QUIET_SECONDS
        while time.monotonic() < deadline:  # (the page's requests are collected meanwhile)
            later = await page.evaluate(PAGE_STATE)
            await asyncio.sleep(0.2)
        asked_later = _events_requests(page, run["id"])

    assert told["state"] == "pruned", told
    assert told["connection"] == "This run has ended; its events are no longer kept.", told
    assert told["status"] == "ended", told
    assert later == told, later
    # EventSource's request and the page's one look at the same URL; none after.
    assert asked == 2, asked
    assert asked_later == asked, asked_later
