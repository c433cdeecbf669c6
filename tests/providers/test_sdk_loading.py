"""A provider SDK is imported off the event loop: the first call through pydantic-ai (seconds of
CPU to import it and the SDK) must not freeze every other request and stream of the process.

Measured in a fresh interpreter (nothing imported yet), as a server process meets it: a ticker on
the loop records its longest wait while the first Anthropic call is made against the fake
Anthropic server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fakes.anthropic_server import FakeAnthropic

ROOT = Path(__file__).parents[2]
FIRST_CALL = """
import asyncio, json, sys, time

from providers.targets import call_target
from providers.config import TargetRequest
from tests.providers.support import target_config


async def main() -> None:
    longest = 0.0
    stop = False

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    config = target_config("anthropic", sys.argv[1], model="claude-fake-1", api_key="sk-ant")
    started = time.perf_counter()
    reply = await call_target(config, TargetRequest(input="Hi"), allow_private_networks=True)
    took = time.perf_counter() - started
    stop = True
    await ticker
    loaded = "pydantic_ai.models.anthropic" in sys.modules
    print(json.dumps({"output": reply.output, "took": took, "longest": longest, "loaded": loaded}))


asyncio.run(main())
"""


def test_the_first_sdk_call_leaves_the_event_loop_running() -> None:
    with FakeAnthropic() as server:
        server.reply = lambda body: "hello"
        done = subprocess.run(
            [sys.executable, "-c", FIRST_CALL, server.url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["output"] == "hello"
    assert figures["loaded"]
    # The import is most of the first call (a second or more); the loop never waits for it.
    assert figures["took"] > 4 * figures["longest"], figures
