"""Webhook changes that meet: two redeliveries or two rotations at once, a webhook disabled
with messages pending, creations beside writes to the project, and the hourly allowance of
sends asked for by hand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database, Tenant
from database.projects import webhook_crud
from database.projects.webhook_crud import DISABLED
from database.projects.webhook_models import Webhook, WebhookDelivery
from database.projects.webhooks import DELIVERY_JOB, signing_secrets
from tasks.models import Job
from tests.helpers import (
    Account,
    assert_problem,
    create_project,
    register,
    until_waiting_for_locks,
)
from tests.helpers import tenant_session as tenant

URL = "https://hooks.example.com/assay"


async def _webhook(client: httpx.AsyncClient, owner: Account) -> tuple[str, dict[str, Any]]:
    project = await create_project(client, owner)
    hooks = f"/api/v1/projects/{project['id']}/webhooks"
    body = {"url": URL, "events": ["run.completed"]}
    created = await client.post(hooks, json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    return f"{hooks}/{created.json()['id']}", created.json()


async def _a_test_ended(
    client: httpx.AsyncClient, database: Database, owner: Account, url: str, status: str
) -> dict[str, Any]:
    """A test message sent to the webhook at `url`, its delivery ended as `status`."""
    delivery = (await client.post(f"{url}/test", headers=owner.headers)).json()
    async with tenant(database, owner.organization_id) as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == uuid.UUID(delivery["id"]))
            .values(status=status)
        )
    return dict(delivery)


async def _while_row_is_held(
    owner_engine: AsyncEngine,
    table: str,
    row_id: str,
    requests: list[Callable[[], Awaitable[httpx.Response]]],
) -> list[httpx.Response]:
    """Sends `requests` at once while another transaction holds the row, so that each reads
    it before any writes it; then lets them go."""
    async with owner_engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE"), {"id": row_id}
        )
        sent = [asyncio.ensure_future(request()) for request in requests]
        await until_waiting_for_locks(owner_engine, len(requests))
        await transaction.rollback()
    return list(await asyncio.wait_for(asyncio.gather(*sent), timeout=30))


async def test_two_redeliveries_at_once_queue_one_job(
    committed_client, committed_database, committed_owner, owner_engine
):
    client, database, owner = committed_client, committed_database, committed_owner
    url, _ = await _webhook(client, owner)
    delivery = await _a_test_ended(client, database, owner, url, "failed")
    redeliver = f"{url}/deliveries/{delivery['id']}/redeliver"

    def post() -> Awaitable[httpx.Response]:
        return client.post(redeliver, headers=owner.headers)

    answers = await _while_row_is_held(
        owner_engine, "webhook_deliveries", delivery["id"], [post, post]
    )
    assert sorted(a.status_code for a in answers) == [202, 409]
    assert "still pending" in next(a for a in answers if a.status_code == 409).text
    async with tenant(database, owner.organization_id) as session:
        jobs = (await session.scalars(select(Job).where(Job.kind == DELIVERY_JOB))).all()
        row = await session.get(WebhookDelivery, uuid.UUID(delivery["id"]))
    assert [job.payload["delivery_id"] for job in jobs] == [delivery["id"]] * 2  # test + one
    assert row is not None and row.status == "pending"


async def test_two_rotations_at_once_each_show_a_secret_that_signs(
    committed_client, committed_database, committed_owner, owner_engine, runtime
):
    client, database, owner = committed_client, committed_database, committed_owner
    url, created = await _webhook(client, owner)

    def rotate() -> Awaitable[httpx.Response]:
        return client.post(f"{url}/rotate-secret", headers=owner.headers)

    answers = await _while_row_is_held(owner_engine, "webhooks", created["id"], [rotate, rotate])
    assert [a.status_code for a in answers] == [200, 200]
    shown = {a.json()["secret"] for a in answers}
    async with tenant(database, owner.organization_id) as session:
        row = await session.get(Webhook, uuid.UUID(created["id"]))
        assert row is not None
        signing = signing_secrets(row, runtime.secret_box, datetime.now(UTC))
    # The later one signs, the earlier one beside it for the overlap: neither is lost.
    assert set(signing) == shown and len(signing) == 2


async def _unfinished_jobs(database: Database, owner: Account) -> list[tuple[str, str]]:
    async with tenant(database, owner.organization_id) as session:
        jobs = await session.scalars(
            select(Job).where(Job.kind == DELIVERY_JOB, Job.status.in_(("queued", "running")))
        )
        return [(job.payload["delivery_id"], job.status) for job in jobs]


async def test_disabling_a_webhook_fails_its_pending_messages(client, database):
    owner = await register(client)
    url, _ = await _webhook(client, owner)
    pending = (await client.post(f"{url}/test", headers=owner.headers)).json()
    disabled = await client.patch(url, json={"enabled": False}, headers=owner.headers)
    assert disabled.status_code == 200, disabled.text
    # Enabled again before its retry came: the message stays failed, and is not sent.
    await client.patch(url, json={"enabled": True}, headers=owner.headers)
    log = (await client.get(f"{url}/deliveries", headers=owner.headers)).json()
    assert [(d["id"], d["status"], d["last_error"]) for d in log["items"]] == [
        (pending["id"], "failed", DISABLED)
    ]
    # Sent again by hand, it is pending once more, by one job: the first was withdrawn.
    assert await _unfinished_jobs(database, owner) == []
    again = await client.post(f"{url}/deliveries/{pending['id']}/redeliver", headers=owner.headers)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending"
    assert await _unfinished_jobs(database, owner) == [(pending["id"], "queued")]


async def test_a_redelivery_waits_for_an_attempt_under_way(client, database):
    """A job of an earlier round, its attempt running, would send the message beside the
    new round's: the redelivery is refused until it ends; a queued one is withdrawn."""
    owner = await register(client)
    url, _ = await _webhook(client, owner)
    delivery = await _a_test_ended(client, database, owner, url, "failed")
    async with tenant(database, owner.organization_id) as session:
        await session.execute(
            update(Job)
            .where(Job.payload["delivery_id"].astext == delivery["id"])
            .values(status="running")
        )
    redeliver = f"{url}/deliveries/{delivery['id']}/redeliver"
    busy = await client.post(redeliver, headers=owner.headers)
    assert_problem(busy, 409)
    assert "under way" in busy.json()["detail"]
    async with tenant(database, owner.organization_id) as session:
        await session.execute(
            update(Job)
            .where(Job.payload["delivery_id"].astext == delivery["id"])
            .values(status="queued")  # its retry, waiting
        )
    assert (await client.post(redeliver, headers=owner.headers)).status_code == 202
    assert await _unfinished_jobs(database, owner) == [(delivery["id"], "queued")]


async def test_sends_asked_for_by_hand_have_an_hourly_allowance(
    client, database, runtime, monkeypatch
):
    monkeypatch.setattr(runtime.settings, "webhook_manual_sends_per_hour", 2)
    owner = await register(client)
    url, _ = await _webhook(client, owner)
    first = await _a_test_ended(client, database, owner, url, "delivered")
    redeliver = f"{url}/deliveries/{first['id']}/redeliver"
    assert (await client.post(redeliver, headers=owner.headers)).status_code == 202
    refused = await client.post(f"{url}/test", headers=owner.headers)
    assert_problem(refused, 429)
    assert "retry-after" in refused.headers
    other = await register(client)  # another organization has its own allowance
    other_url, _ = await _webhook(client, other)
    assert (await client.post(f"{other_url}/test", headers=other.headers)).status_code == 202
    log = (await client.get(f"{url}/deliveries", headers=owner.headers)).json()
    assert log["total"] == 1  # the refused test wrote nothing


async def test_a_webhook_being_created_lets_the_projects_rows_be_written(
    committed_client, committed_database, committed_owner
):
    """Creations take turns on the project's row, with a lock that the foreign-key checks of
    the project's other rows (a test added, a run started) do not wait for."""
    client, database, owner = committed_client, committed_database, committed_owner
    project = await create_project(client, owner)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await webhook_crud.count_webhooks(session, uuid.UUID(project["id"]))
        body = {"project_id": project["id"], "input": "What is 2 + 2?"}
        added = await asyncio.wait_for(
            client.post("/api/v1/tests", json=body, headers=owner.headers), timeout=10
        )
        assert added.status_code == 201, added.text
