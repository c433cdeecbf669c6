"""The live run page in a real headless Chromium, driven over the Chrome DevTools Protocol
(a WebSocket from the `websockets` package), against a real server running a real run."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.servers import create_run, free_port, live_env, start_server
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 40
BROWSER_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")

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


def _browser() -> str:
    """The Chromium binary, else skip (or fail when ASSAY_REQUIRE_BROWSER=1, as in CI)."""
    for candidate in BROWSER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    reason = (
        "Chromium is not installed (looked for chromium, chromium-browser, /usr/bin/chromium);"
        " install it with `apt-get install -y chromium` to run the live page test"
    )
    if os.environ.get("ASSAY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ASSAY_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class DevTools:
    """A minimal CDP client on one page target: commands by id, events ignored."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._ids = itertools.count(1)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        command_id = next(self._ids)
        await self.socket.send(
            json.dumps({"id": command_id, "method": method, "params": params or {}})
        )
        async with asyncio.timeout(30):
            while True:
                message = json.loads(await self.socket.recv())
                if message.get("id") != command_id:
                    continue  # an event, or the answer to an earlier command
                if "error" in message:
                    raise AssertionError(f"{method} failed: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


def _launch(binary: str, port: int, profile: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


@asynccontextmanager
async def chromium(binary: str, profile: Path, log_path: Path) -> AsyncIterator[DevTools]:
    port = free_port()
    process = await asyncio.to_thread(_launch, binary, port, profile, log_path)
    try:
        target = await _page_target(port, process, log_path)
        async with connect(target, max_size=None, open_timeout=30) as socket:
            yield DevTools(socket)
    finally:
        await asyncio.to_thread(_stop, process)


async def _page_target(port: int, process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"chromium exited early:\n{_tail(log_path)}")
            try:
                targets = (await client.get(f"http://127.0.0.1:{port}/json")).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"no DevTools page target:\n{_tail(log_path)}")


async def test_live_page_fills_its_table_while_the_run_runs(tmp_path):
    binary = _browser()
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
