"""Runs cross connections (workers claim jobs, write results): these tests commit for real,
run a worker pool in the test process, and remove what they created at the end."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.engine.jobs import HANDLERS, on_dead
from database.core import Database, Tenant
from tasks.worker import WorkerPool
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import Account, register, remove_account

TERMINAL = {"completed", "failed", "cancelled", "stopped"}


@dataclass
class Lab:
    """A committed organization with a project, ready to run test sets."""

    client: httpx.AsyncClient
    account: Account
    project_id: str

    async def post(self, path: str, body: dict[str, Any], expect: int | None = None) -> Any:
        response = await self.client.post(f"/api/v1{path}", json=body, headers=self.account.headers)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(
            f"/api/v1{path}", params=params, headers=self.account.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def model(self, **config: Any) -> str:
        body = {"name": f"model-{uuid.uuid4().hex[:6]}", **config}
        return (await self.post("/models", body, expect=201)).json()["id"]

    async def openai_model(self, fake: FakeOpenAI, **extra: Any) -> str:
        return await self.model(
            provider="openai-compatible",
            model="fake-model",
            base_url=fake.base_url,
            api_key="sk-test",
            **extra,
        )

    async def test_set(self, cases: list[dict[str, Any]]) -> str:
        created = await self.post(
            "/tests/bulk", {"project_id": self.project_id, "tests": cases}, expect=201
        )
        body = {
            "project_id": self.project_id,
            "name": f"set-{uuid.uuid4().hex[:6]}",
            "test_ids": created.json()["ids"],
        }
        return (await self.post("/test-sets", body, expect=201)).json()["id"]

    async def metric(self, type: str, **extra: Any) -> str:
        body = {
            "project_id": self.project_id,
            "name": f"{type}-{uuid.uuid4().hex[:6]}",
            "type": type,
        }
        return (await self.post("/metrics", {**body, **extra}, expect=201)).json()["id"]

    async def any_answer(self) -> str:
        """A metric every answer passes (a run needs one)."""
        return await self.metric("word-count", parameters={"min": 0})

    async def run(self, test_set_id: str, target: str, **extra: Any) -> dict[str, Any]:
        body = {"test_set_id": test_set_id, "target_model_id": target, **extra}
        return (await self.post("/runs", body, expect=202)).json()

    async def wait(self, run_id: str, seconds: float = 30.0) -> dict[str, Any]:
        """The run once it has ended (fails the test if it takes longer than `seconds`)."""
        deadline = time.monotonic() + seconds
        while True:
            run = await self.get(f"/runs/{run_id}")
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                results = [
                    (r["position"], r["status"], r["error_type"], r["error_message"])
                    for r in await self.results(run_id)
                ]
                raise AssertionError(f"run still {run['status']}: {run['counts']} {results}")
            await asyncio.sleep(0.1)

    async def wait_for_results(self, run_id: str, count: int, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        done = 0
        while done < count:
            assert time.monotonic() < deadline, f"only {done} results after {seconds} s"
            await asyncio.sleep(0.1)
            done = (await self.get(f"/runs/{run_id}"))["counts"]["done"]

    async def results(self, run_id: str) -> list[dict[str, Any]]:
        return (await self.get(f"/runs/{run_id}/results", limit=200))["items"]


@pytest.fixture
async def lab(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
) -> AsyncIterator[Lab]:
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    async with working_lab(committed_database, app, owner_engine, database_urls, "runs") as lab:
        yield lab


@contextlib.asynccontextmanager
async def working_lab(
    database: Any, app: Any, owner_engine: Any, database_urls: Any, project: str
) -> AsyncIterator[Lab]:
    """A lab whose runs a worker pool of this process runs."""
    pool = WorkerPool(
        database,
        HANDLERS,
        on_dead=on_dead,
        concurrency=4,
        listen_url=database_urls.runtime,
        poll_seconds=0.5,
        lease=timedelta(seconds=10),
    )
    await pool.start()
    async with open_lab(app, owner_engine, project) as lab:
        try:
            yield lab
        finally:
            await pool.stop(drain_seconds=2)


@contextlib.asynccontextmanager
async def open_lab(app: Any, owner_engine: Any, project: str) -> AsyncIterator[Lab]:
    """An account with a project, removed at the end."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        account = await register(client)
        created = await client.post(
            "/api/v1/projects", json={"name": project}, headers=account.headers
        )
        try:
            yield Lab(client=client, account=account, project_id=created.json()["id"])
        finally:
            await remove_account(owner_engine, account)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(require_api_key="sk-test") as server:
        yield server


@dataclass
class ChunkContext:
    """The run's only chunk, run in this process (no worker pool claims it)."""

    database: Database
    organization_id: uuid.UUID
    payload: dict[str, Any]
    kind: str = "run.chunk"
    attempt: int = 1

    def transaction(self) -> Any:
        return self.database.transaction(Tenant(self.organization_id))


@pytest.fixture
async def quiet_lab(
    committed_database, app, owner_engine, runtime, monkeypatch
) -> AsyncIterator[Lab]:
    """A lab without workers: the test runs the chunk itself."""
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    async with open_lab(app, owner_engine, "chunk") as lab:
        yield lab
