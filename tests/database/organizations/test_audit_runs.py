"""A project's baseline and a run's gate are recorded when they are set. Runs need workers, which
read from other connections: these tests commit for real and remove their organization at the
end (its audit entries stay, as they do in production)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.engine.jobs import HANDLERS, on_dead
from tasks.worker import WorkerPool
from tests.database.organizations.audit_helpers import audit_entries
from tests.helpers import Account, register, remove_account

pytestmark = pytest.mark.slow


@pytest.fixture
async def runner(
    committed_database, app, owner_engine, database_urls
) -> AsyncIterator[tuple[httpx.AsyncClient, Account]]:
    pool = WorkerPool(
        committed_database,
        HANDLERS,
        on_dead=on_dead,
        concurrency=2,
        listen_url=database_urls.runtime,
        poll_seconds=0.2,
        lease=timedelta(seconds=10),
    )
    await pool.start()
    transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        account = await register(client)
        try:
            yield client, account
        finally:
            await pool.stop(drain_seconds=2)
            await remove_account(owner_engine, account)


async def _post(client: httpx.AsyncClient, account: Account, path: str, body: dict) -> Any:
    response = await client.post(f"/api/v1{path}", json=body, headers=account.headers)
    assert response.status_code in (201, 202), response.text
    return response.json()


async def _completed(client: httpx.AsyncClient, account: Account, run_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = await client.get(f"/api/v1/runs/{run_id}", headers=account.headers)
        if run.json()["status"] == "completed":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run did not complete: {run.json()}")


async def test_baseline_changes_and_gates_are_recorded(runner):
    client, account = runner
    model = await _post(client, account, "/models", {"name": "demo", "provider": "demo"})
    project = await _post(
        client, account, "/projects", {"name": "gated", "default_target_model_id": model["id"]}
    )
    test = await _post(client, account, "/tests", {"project_id": project["id"], "input": "hi"})
    test_set = await _post(
        client,
        account,
        "/test-sets",
        {"project_id": project["id"], "name": "s", "test_ids": [test["id"]]},
    )
    metric = await _post(
        client,
        account,
        "/metrics",
        {
            "project_id": project["id"],
            "name": "any",
            "type": "word-count",
            "parameters": {"min": 0},
        },
    )
    baseline = await _post(
        client, account, "/runs", {"test_set_id": test_set["id"], "metric_ids": [metric["id"]]}
    )
    await _completed(client, account, baseline["id"])
    url = f"/api/v1/projects/{project['id']}/baseline"
    for run_id in (baseline["id"], baseline["id"], None):  # set, set again (no change), clear
        response = await client.put(url, json={"run_id": run_id}, headers=account.headers)
        assert response.status_code == 200, response.text
    changes = await audit_entries(client, account, action="project.baseline_changed")
    assert [(e["target_type"], e["target_id"]) for e in changes] == [("project", project["id"])] * 2
    assert [e["details"] for e in changes] == [
        {"from": baseline["id"], "to": None},
        {"from": None, "to": baseline["id"]},
    ]
    assert all(e["actor_user_id"] == str(account.user_id) for e in changes)
    assert {e["ip"] for e in changes} == {"198.51.100.20"}

    # A gate is set with its run (created, or made by rescoring): recorded as resolved.
    gate = {"baseline": baseline["id"], "min_pass_rate": 0.5}
    ungated = await _post(
        client, account, "/runs", {"test_set_id": test_set["id"], "metric_ids": [metric["id"]]}
    )
    gated = await _post(
        client,
        account,
        "/runs",
        {"test_set_id": test_set["id"], "metric_ids": [metric["id"]], "gate": gate},
    )
    rescored = await _post(
        client,
        account,
        f"/runs/{baseline['id']}/rescore",
        {"metric_ids": [metric["id"]], "gate": {"min_pass_rate": 0.9}},
    )
    entries = await audit_entries(client, account, action="run.gate_set")
    assert [e["target_id"] for e in entries] == [rescored["id"], gated["id"]]
    assert ungated["id"] not in {e["target_id"] for e in entries}
    for entry, run in zip(entries, (rescored, gated), strict=True):
        assert entry["target_type"] == "run"
        assert entry["details"] == {"project_id": project["id"], "gate": run["gate"]}
    assert entries[1]["details"]["gate"]["baseline_run_id"] == baseline["id"]
    assert entries[0]["details"]["gate"]["min_pass_rate"] == 0.9
