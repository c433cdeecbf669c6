"""A run's end beside what changes its project meanwhile: a webhook deleted as the end is
announced to it."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import until_waiting_for_locks


async def test_a_webhook_deleted_as_a_run_ends_is_skipped_not_the_end(
    quiet_lab: Lab, fake: FakeOpenAI, owner_engine: AsyncEngine
) -> None:
    """The end read the project's webhooks, then queued their deliveries: one deleted between
    the two failed the deliveries' foreign key and, with it, the end (a cancel was a 409, and
    the run stayed queued)."""
    lab = quiet_lab
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "hi"}])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    webhooks = f"/projects/{lab.project_id}/webhooks"
    body = {"url": "https://hooks.example.com/a", "events": ["run.cancelled"]}
    webhook = (await lab.post(webhooks, body, expect=201)).json()["id"]
    async with owner_engine.connect() as holder:
        held = await holder.begin()  # the deletion waits for it, and the end behind that
        await holder.execute(
            text("SELECT FROM webhooks WHERE id = :id FOR UPDATE"), {"id": webhook}
        )
        deleting = asyncio.create_task(
            lab.client.delete(f"/api/v1{webhooks}/{webhook}", headers=lab.account.headers)
        )
        await until_waiting_for_locks(owner_engine, 1)
        cancelling = asyncio.create_task(lab.post(f"/runs/{run['id']}/cancel", {}))
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    assert (await deleting).status_code == 204
    cancelled = await cancelling
    assert cancelled.status_code == 200, cancelled.text
    assert (await lab.get(f"/runs/{run['id']}"))["status"] == "cancelled"
