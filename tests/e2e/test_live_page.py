"""The live run page in a real headless Chromium (tests/e2e/browser.py), against a real server
running a real run."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.database.results.test_agent_runs import MOCKS, TOOLS, _agent
from tests.e2e.browser import DevTools, chromium, find_browser
from tests.e2e.servers import create_run, live_env, start_server
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import PASSWORD

pytestmark = pytest.mark.slow

CASES = 40

PAGE_STATE = """(() => {
  const text = (id) => {
    const element = document.getElementById(id);
    return element ? element.textContent : null;
  };
  const rows = Array.from(document.querySelectorAll("#results tbody tr"));
  const progress = document.getElementById("progress");
  const status = document.getElementById("status");
  return {
    keys: rows.map((r) => r.dataset.key),
    finals: rows.filter((r) => ["passed", "failed", "errored"].includes(r.className)).length,
    percent: progress ? progress.dataset.percent || null : null,
    progressText: text("progress"),
    status: status ? status.dataset.status : null,
    done: text("done"),
    total: text("total"),
    passed: text("passed"),
    metrics: Array.from(document.querySelectorAll("#metrics tbody tr"), (r) => r.dataset.metric),
    connection: text("connection"),
  };
})()"""


async def test_live_page_fills_its_table_while_the_run_runs(tmp_path):
    binary = find_browser()
    # Slow answers at first, so the page is certainly seen part-filled; faster once it was.
    with FakeOpenAI(require_api_key="sk-test", latency=0.5) as fake:
        # Each stream lives 1 s, so the page's EventSource reconnects (Last-Event-ID) mid-run.
        env = live_env(tmp_path / "data", 2)
        env.update(ASSAY_SSE_MAX_LIFETIME_SECONDS="1", ASSAY_SSE_RETRY_MS="100")
        server = start_server(env, tmp_path / "server.log")
        try:
            await asyncio.to_thread(server.wait_healthy, 120)
            async with (
                chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as page,
                httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api,
            ):
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                run = await create_run(api, fake, cases=CASES, concurrency=4)
                issued = await api.post(f"/runs/{run['id']}/stream-token", json={})
                assert issued.status_code == 200, issued.text
                await page.send(
                    "Page.navigate", {"url": f"{server.url}{issued.json()['page_url']}"}
                )

                states = await _poll_until_final(page, fake, seconds=90)
        finally:
            server.stop()
    streams = _event_requests(server.log(), run["id"])

    partial = [s for s in states if 0 < len(s["keys"]) < CASES]
    assert partial, f"the table was never seen part-filled: {[len(s['keys']) for s in states]}"
    assert any(s["status"] == "running" for s in partial), partial[:3]
    assert any(0 < int(s["percent"] or 0) < 100 for s in states), [s["percent"] for s in states]
    for state in states:  # never a duplicate row, at any moment
        assert len(state["keys"]) == len(set(state["keys"])), state["keys"]

    final = states[-1]
    assert final["status"] == "completed", final
    assert sorted(final["keys"]) == sorted(f"{position}:0" for position in range(CASES)), final
    assert final["keys"] == [f"{position}:0" for position in range(CASES)], "rows out of order"
    assert final["finals"] == CASES, final
    assert final["percent"] == "100" and final["progressText"] == "100 %", final
    assert (final["done"], final["total"], final["passed"]) == (str(CASES),) * 3, final
    assert final["metrics"] == ["m"], final
    # The page did reconnect during the run, and the replays added no row twice (checked above).
    assert streams.count(200) >= 2, streams


def _event_requests(log: str, run_id: str) -> list[int]:
    """The statuses of the server's answers to the run's event stream requests, in order."""
    statuses = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("path") == f"/public/runs/{run_id}/events":
            statuses.append(int(record["status"]))
    return statuses


async def _poll_until_final(page: DevTools, fake: FakeOpenAI, seconds: float) -> list[dict]:
    """Page states every 0.1 s until the run is shown as ended with every row final."""
    states: list[dict] = []
    deadline = time.monotonic() + seconds
    while True:
        state = await page.evaluate(PAGE_STATE)
        if state is not None and state.get("status") is not None:  # the page has loaded
            states.append(state)
            if 0 < len(state["keys"]) < CASES:
                fake.latency = 0.2
            if state["status"] in ("completed", "failed", "cancelled") and (
                state["finals"] == len(state["keys"])
            ):
                return states
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not finish: {states[-1:] or state}")
        await asyncio.sleep(0.1)


ACTIVITY = """(() => {
  const status = document.getElementById("status");
  const rows = Array.from(document.querySelectorAll("#results tbody tr"));
  return {
    status: status ? status.dataset.status : null,
    finals: rows.filter((r) => ["passed", "failed", "errored"].includes(r.className)).length,
    activity: rows.map((r) => Array.from(r.querySelectorAll(".activity li"), (i) => i.textContent)),
    evaluations: rows.map((r) => r.querySelector(".evaluations").textContent),
    rates: Object.fromEntries(Array.from(document.querySelectorAll("#metrics tbody tr"),
      (r) => [r.dataset.metric, r.querySelector(".rate").textContent])),
  };
})()"""


async def test_live_page_shows_an_agents_steps_and_a_conversations_turns(tmp_path):
    binary = find_browser()
    with FakeOpenAI(require_api_key="sk-test", reply=_agent, latency=0.2) as fake:
        server = start_server(live_env(tmp_path / "data", 2), tmp_path / "server.log")
        try:
            await asyncio.to_thread(server.wait_healthy, 120)
            async with (
                chromium(binary, tmp_path / "profile", tmp_path / "chromium.log") as page,
                httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api,
            ):
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                run = await _agent_run(api, fake)
                issued = await api.post(f"/runs/{run['id']}/stream-token", json={})
                await page.send(
                    "Page.navigate", {"url": f"{server.url}{issued.json()['page_url']}"}
                )
                deadline = time.monotonic() + 60
                while True:
                    state = await page.evaluate(ACTIVITY)
                    if state and state["status"] == "completed" and state["finals"] == 2:
                        break
                    assert time.monotonic() < deadline, state
                    await asyncio.sleep(0.1)
        finally:
            server.stop()
    agent, talk = state["activity"]
    assert agent[0].startswith('step 1: calls get_weather({"city":"Paris"}), lookup('), agent
    assert agent[1].startswith("step 2: It is"), agent
    assert [line.split(":")[0] for line in talk] == ["turn 1", "turn 2", "turn 3"], talk
    assert talk[0].startswith("turn 1: user: Hi / assistant: It is"), talk
    assert talk[-1].endswith("[script_done]"), talk
    # The judge (the agent's own model, which answers with tool calls) could not judge: its
    # verdicts are errors, shown as such and no part of its pass rate.
    assert all(shown.endswith("judge: error") for shown in state["evaluations"]), state
    assert state["rates"] == {"m": "100 %", "judge": "\N{EN DASH}"}, state["rates"]


async def _agent_run(api: httpx.AsyncClient, fake: FakeOpenAI) -> dict:
    """Registers, and starts a run of one agent case and one scripted conversation."""
    registered = await api.post(
        "/auth/register",
        json={"email": "agents@example.com", "password": PASSWORD, "name": "Agents"},
    )
    api.headers["Authorization"] = f"Bearer {registered.json()['access_token']}"
    model = await api.post(
        "/models",
        json={
            "name": "agent",
            "provider": "openai-compatible",
            "model": "fake-model",
            "base_url": fake.base_url,
            "api_key": "sk-test",
            "tools": TOOLS,
        },
    )
    assert model.status_code == 201, model.text
    project = (await api.post("/projects", json={"name": "agents"})).json()
    tests = [
        {"input": "Weather?", "tool_responses": MOCKS},
        {"conversation": {"turns": ["Hi", "And tomorrow?", "Thanks"]}, "tool_responses": MOCKS},
    ]
    ids = (await api.post("/tests/bulk", json={"project_id": project["id"], "tests": tests})).json()
    test_set = await api.post(
        "/test-sets", json={"project_id": project["id"], "name": "s", "test_ids": ids["ids"]}
    )
    metric = await api.post(
        "/metrics", json={"project_id": project["id"], "name": "m", "type": "tool-args-schema"}
    )
    judge = await api.post(
        "/metrics",
        json={
            "project_id": project["id"],
            "name": "judge",
            "type": "answer-relevance",
            "judge_model_id": model.json()["id"],
        },
    )
    assert judge.status_code == 201, judge.text
    run = await api.post(
        "/runs",
        json={
            "test_set_id": test_set.json()["id"],
            "target_model_id": model.json()["id"],
            "metric_ids": [metric.json()["id"], judge.json()["id"]],
        },
    )
    assert run.status_code == 202, run.text
    return dict(run.json())
