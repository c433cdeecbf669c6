"""Two deletions of one project (or webhook) at once: the one that deleted it answers 204 and
records it, the other a 404 that records nothing. A baseline set on a project deleted meanwhile
is a 404 too, never the deleted project's body."""

from __future__ import annotations

from tests.database.organizations.audit_helpers import audit_entries
from tests.helpers import assert_problem, beside_a_deletion, create_project


async def test_a_project_deleted_twice_at_once_is_recorded_once(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    path = f"/api/v1/projects/{project}"
    first, second = await beside_a_deletion(
        client, owner, owner_engine, "projects", project, path, ("DELETE", path, None)
    )
    assert first.status_code == 204
    assert_problem(second, 404)
    assert len(await audit_entries(client, owner, action="project.deleted")) == 1


async def test_a_webhook_deleted_twice_at_once_is_recorded_once(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    body = {"url": "https://hooks.example.com/a", "events": ["run.completed"]}
    made = await client.post(
        f"/api/v1/projects/{project}/webhooks", json=body, headers=owner.headers
    )
    assert made.status_code == 201, made.text
    webhook = made.json()["id"]
    path = f"/api/v1/projects/{project}/webhooks/{webhook}"
    first, second = await beside_a_deletion(
        client, owner, owner_engine, "webhooks", webhook, path, ("DELETE", path, None)
    )
    assert first.status_code == 204
    assert_problem(second, 404)
    assert len(await audit_entries(client, owner, action="webhook.deleted")) == 1


async def test_a_baseline_cleared_on_a_project_deleted_meanwhile_is_a_404(
    committed_client, committed_owner, owner_engine
):
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    path = f"/api/v1/projects/{project}"
    deleted, cleared = await beside_a_deletion(
        client,
        owner,
        owner_engine,
        "projects",
        project,
        path,
        ("PUT", f"{path}/baseline", {"run_id": None}),
    )
    assert deleted.status_code == 204
    assert_problem(cleared, 404)
