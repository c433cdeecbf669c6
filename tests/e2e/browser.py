"""A real headless Chromium for end-to-end tests, driven over the Chrome DevTools Protocol (a
WebSocket from the `websockets` package)."""

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

from tests.e2e.servers import free_port

BROWSER_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")


def find_browser() -> str:
    """The Chromium binary, else skip (or fail when ASSAY_REQUIRE_BROWSER=1, as in CI)."""
    for candidate in BROWSER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    reason = (
        "Chromium is not installed (looked for chromium, chromium-browser, /usr/bin/chromium);"
        " install it with `apt-get install -y chromium` to run the browser tests"
    )
    if os.environ.get("ASSAY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ASSAY_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class DevTools:
    """A minimal CDP client on one page target: commands by id; the events that arrive while
    a command waits for its answer are kept in `events`, in order."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        command_id = next(self._ids)
        await self.socket.send(
            json.dumps({"id": command_id, "method": method, "params": params or {}})
        )
        async with asyncio.timeout(30):
            while True:
                message = json.loads(await self.socket.recv())
                if "method" in message and "id" not in message:
                    self.events.append(message)
                    continue
                if message.get("id") != command_id:
                    continue  # the answer to an earlier command
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

    def params_of(self, method: str) -> list[dict[str, Any]]:
        """The parameters of the kept events of one kind, e.g. `Network.requestWillBeSent`."""
        return [dict(e.get("params", {})) for e in self.events if e["method"] == method]


def _launch(
    binary: str, port: int, profile: Path, log_path: Path, flags: tuple[str, ...]
) -> subprocess.Popen[bytes]:
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
                *flags,
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
async def chromium(
    binary: str, profile: Path, log_path: Path, *flags: str
) -> AsyncIterator[DevTools]:
    """A headless Chromium (given extra command-line `flags`), driven on its one page."""
    port = free_port()
    process = await asyncio.to_thread(_launch, binary, port, profile, log_path, flags)
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
