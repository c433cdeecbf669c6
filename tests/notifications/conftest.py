"""Live streams need real HTTP (the ASGI test transport buffers whole responses): a uvicorn
server runs in the test's event loop on loopback, with this process's notifications (one
LISTEN connection, publisher, hub) and a worker pool, as the lifespan would start them."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from app.engine.jobs import HANDLERS, on_dead
from app.http_protocol import BoundedHttpToolsProtocol
from database.results import crud as results_crud
from database.results import events as run_events
from database.results.event_payloads import STREAM_EVENTS
from notifications.service import Notifications, set_notifications
from tasks.worker import WorkerPool
from tests.database.results.conftest import Lab
from tests.helpers import register, remove_account


@dataclass
class Event:
    """One parsed server-sent event (or comment, or heartbeat)."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    heartbeat: bool = False


async def read_events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parses an SSE body as it arrives; yields each event (comments and retry included). A
    heartbeat comes with `heartbeat` set and no type: `if event.event` picks the run's events."""
    current = Event()
    lines: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if lines or current.comments or current.retry is not None or current.id is not None:
                current.data = json.loads("\n".join(lines)) if lines else None
                yield current
            current, lines = Event(), []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            current.comments.append(value)
        elif name == "id":
            current.id = value
        elif name == "event" and value == "heartbeat":
            current.heartbeat = True
        elif name == "event":
            current.event = value
        elif name == "data":
            lines.append(value)
        elif name == "retry":
            current.retry = int(value)


def check_documented(events: list[Event]) -> None:
    """Every event is of a type `/public/openapi.json` lists, its data valid for that type's
    payload schema (which refuses fields it does not name)."""
    for event in events:
        if event.event:
            STREAM_EVENTS[event.event].model_validate(event.data)


@dataclass
class Live(Lab):
    base_url: str = ""
    notifications: Notifications | None = None

    def events_url(self, run_id: str) -> str:
        return f"/public/runs/{run_id}/events"

    async def stream_token(self, run_id: str) -> str:
        response = await self.post(f"/runs/{run_id}/stream-token", {}, expect=200)
        return str(response.json()["token"])

    async def whole_stream(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        headers: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
    ) -> tuple[httpx.Response, list[Event]]:
        """The answer to opening the run's stream, and its named events to its end (an ended
        run's stream closes after run.finished); none when the answer is not 200."""
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=30) as client,
            client.stream(
                "GET", self.events_url(run_id), params=params, headers=headers
            ) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                return response, []
            seen = [event async for event in read_events(response) if event.event]
        return response, seen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def live(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
) -> AsyncIterator[Live]:
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    monkeypatch.setattr(runtime.settings, "sse_heartbeat_seconds", 0.5)
    notifications = Notifications(
        committed_database,
        database_urls.runtime,
        read_events=run_events.read_after,
        present_runs=results_crud.present_runs,
    )
    notifications.hub.poll_seconds = 0.5
    pool = WorkerPool(
        committed_database,
        HANDLERS,
        on_dead=on_dead,
        concurrency=4,
        listener=notifications.listener,
        poll_seconds=0.5,
        lease=timedelta(seconds=10),
    )
    await notifications.start()
    set_notifications(notifications)
    await pool.start()
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
            http=BoundedHttpToolsProtocol,  # as the service runs
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        account = await register(client)
        project = await client.post(
            "/api/v1/projects", json={"name": "live"}, headers=account.headers
        )
        try:
            yield Live(
                client=client,
                account=account,
                project_id=project.json()["id"],
                base_url=base_url,
                notifications=notifications,
            )
        finally:
            server.should_exit = True
            await serving
            await pool.stop(drain_seconds=2)
            set_notifications(None)
            await notifications.stop()
            await remove_account(owner_engine, account)
