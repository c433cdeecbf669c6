"""Two baseline changes of one project at once: each records the baseline it replaced."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from tests.database.organizations.audit_helpers import audit_entries
from tests.helpers import until_waiting_for_locks


async def test_two_baseline_changes_at_once_each_record_the_one_they_replaced(lab, owner_engine):
    model = await lab.model(provider="demo")
    test_set = await lab.test_set([{"input": "hi"}])
    run = await lab.run(test_set, model, metric_ids=[await lab.any_answer()])
    assert (await lab.wait(run["id"]))["status"] == "completed"
    url = f"/api/v1/projects/{lab.project_id}/baseline"
    headers = lab.account.headers
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        hold = "SELECT FROM projects WHERE id = :id FOR UPDATE"
        await holder.execute(text(hold), {"id": lab.project_id})
        setting = asyncio.create_task(
            lab.client.put(url, json={"run_id": run["id"]}, headers=headers)
        )
        await until_waiting_for_locks(owner_engine, 1)
        clearing = asyncio.create_task(lab.client.put(url, json={"run_id": None}, headers=headers))
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    assert (await setting).status_code == 200
    assert (await clearing).status_code == 200
    changes = await audit_entries(lab.client, lab.account, action="project.baseline_changed")
    assert [entry["details"] for entry in reversed(changes)] == [
        {"from": None, "to": run["id"]},
        {"from": run["id"], "to": None},
    ]
