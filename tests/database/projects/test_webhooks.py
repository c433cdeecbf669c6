"""Project webhooks through the API: validation, the SSRF guard, tenancy and roles, secrets
shown once and stored encrypted, rotation, and test messages queued for delivery."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from database.projects.webhook_models import Webhook
from database.projects.webhooks import DELIVERY_JOB, signing_secrets
from tasks.models import Job
from tests.helpers import Account, add_member, assert_problem, create_project, register
from tests.helpers import tenant_session as tenant

URL = "https://hooks.example.com/assay"


def hooks(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/webhooks"


async def _webhook(client, account: Account, project_id: str, **extra: object) -> dict:
    body = {"url": URL, "events": ["run.completed"], **extra}
    response = await client.post(hooks(project_id), json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_the_secret_is_shown_once_and_stored_encrypted(client, database, runtime):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(
        client,
        owner,
        project["id"],
        events=["regression", "run.failed", "regression"],
        description="CI bot",
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["events"] == ["run.failed", "regression"]  # each once, in catalogue order
    assert (created["enabled"], created["description"]) == (True, "CI bot")

    url = f"{hooks(project['id'])}/{created['id']}"
    read = await client.get(url, headers=owner.headers)
    listed = await client.get(hooks(project["id"]), headers=owner.headers)
    assert read.status_code == listed.status_code == 200
    assert "secret" not in read.json()
    assert listed.json()["total"] == 1 and "secret" not in listed.json()["items"][0]
    for response in (read, listed):
        assert secret.removeprefix("whsec_") not in response.text

    async with tenant(database, owner.organization_id) as session:
        row = await session.get(Webhook, uuid.UUID(created["id"]))
        assert row is not None
        assert secret.encode() not in row.secret_encrypted
        assert runtime.secret_box.decrypt(row.secret_encrypted) == secret


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["run.completed"]}, "url"),
        ({"url": URL}, "events"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["run.started"]}, "events.0"),
        ({"url": "", "events": ["run.completed"]}, "url"),
        ({"url": "ftp://hooks.example.com/x", "events": ["run.completed"]}, "url"),
        ({"url": "https://user:pw@hooks.example.com/", "events": ["run.completed"]}, "url"),
        # urlsplit drops a tab or a newline; the client that connects refuses them
        ({"url": "https://hooks.example.com/a\tb", "events": ["run.completed"]}, "url"),
        ({"url": "https://hooks.example.com/a\nb", "events": ["run.completed"]}, "url"),
        ({"url": "https://hooks.example.com/a b", "events": ["run.completed"]}, "url"),
        ({"url": f"https://{'a' * 64}.example.com/", "events": ["run.completed"]}, "url"),
        ({"url": URL, "events": ["run.completed"], "description": "x" * 2001}, "description"),
        ({"url": URL, "events": ["run.completed"], "secret": "whsec_mine"}, "secret"),
    ],
)
async def test_invalid_webhooks_are_refused_naming_the_field(client, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await client.post(hooks(project["id"]), json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    listed = await client.get(hooks(project["id"]), headers=owner.headers)
    assert listed.json()["total"] == 0  # nothing half-written


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/hook",
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.7:9000/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
async def test_the_ssrf_guard_refuses_private_urls(client, url):
    owner = await register(client)
    project = await create_project(client, owner)
    body = {"url": url, "events": ["run.completed"]}
    refused = await client.post(hooks(project["id"]), json=body, headers=owner.headers)
    problem = assert_problem(refused, 422, field="url")
    assert "ASSAY_ALLOW_PRIVATE_NETWORKS" in problem["detail"] or "machine" in problem["detail"]

    created = await _webhook(client, owner, project["id"])
    patched = await client.patch(
        f"{hooks(project['id'])}/{created['id']}", json={"url": url}, headers=owner.headers
    )
    assert_problem(patched, 422, field="url")
    read = await client.get(f"{hooks(project['id'])}/{created['id']}", headers=owner.headers)
    assert read.json()["url"] == URL


async def test_an_operator_may_allow_private_networks(client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"], url="http://127.0.0.1:9000/hook")
    assert created["url"] == "http://127.0.0.1:9000/hook"


async def test_updates_keep_what_is_left_out_and_refuse_nulls(client):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"], description="first")
    url = f"{hooks(project['id'])}/{created['id']}"
    patched = await client.patch(
        url,
        json={"events": ["gate.failed", "run.cancelled"], "enabled": False},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["events"] == ["run.cancelled", "gate.failed"]
    assert (body["enabled"], body["url"], body["description"]) == (False, URL, "first")
    assert "secret" not in body
    for field in ("url", "events", "enabled"):
        refused = await client.patch(url, json={field: None}, headers=owner.headers)
        assert_problem(refused, 422, field=field)
    assert_problem(await client.patch(url, json={"events": []}, headers=owner.headers), 422)


async def test_another_organization_sees_nothing(client):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"])
    url = f"{hooks(project['id'])}/{created['id']}"
    stranger = await register(client)
    assert_problem(await client.get(hooks(project["id"]), headers=stranger.headers), 404)
    for method, path, body in [
        ("GET", url, None),
        ("PATCH", url, {"enabled": False}),
        ("DELETE", url, None),
        ("POST", f"{url}/test", None),
        ("POST", f"{url}/rotate-secret", None),
        ("GET", f"{url}/deliveries", None),
        (
            "POST",
            f"{url}/deliveries/{uuid.uuid4()}/redeliver",
            None,
        ),
    ]:
        response = await client.request(method, path, json=body, headers=stranger.headers)
        assert_problem(response, 404)
    # A webhook is reached through its own project only.
    other = await create_project(client, owner)
    assert_problem(
        await client.get(f"{hooks(other['id'])}/{created['id']}", headers=owner.headers), 404
    )
    assert (await client.get(url, headers=owner.headers)).json()["enabled"] is True


async def test_viewers_read_and_members_write(client):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"])
    url = f"{hooks(project['id'])}/{created['id']}"
    viewer = await add_member(client, owner, "viewer")
    assert (await client.get(url, headers=viewer.headers)).status_code == 200
    assert (await client.get(f"{url}/deliveries", headers=viewer.headers)).status_code == 200
    for method, path, body in [
        ("POST", hooks(project["id"]), {"url": URL, "events": ["run.completed"]}),
        ("PATCH", url, {"enabled": False}),
        ("DELETE", url, None),
        ("POST", f"{url}/test", None),
        ("POST", f"{url}/rotate-secret", None),
    ]:
        response = await client.request(method, path, json=body, headers=viewer.headers)
        assert_problem(response, 403)
    member = await add_member(client, owner, "member")
    rotated = await client.post(f"{url}/rotate-secret", headers=member.headers)
    assert rotated.status_code == 200, rotated.text


@pytest.mark.parametrize(
    "secret_url",
    [
        "https://hooks.example.com/services/T000/B000/PATHSECRET?token=QUERYSECRET",
        "https://hooks.example.com/services/T000@PATHSECRET/B000?token=QUERYSECRET",
    ],
)
async def test_a_viewer_reads_a_webhook_url_redacted(client, secret_url):
    """For chat services' incoming webhooks the URL is the credential: only the roles that may
    create and edit webhooks read it whole (an "@" in its path, which a user part's end was
    taken for, showed the path after it)."""
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"], url=secret_url)
    assert created["url"] == secret_url
    one = f"{hooks(project['id'])}/{created['id']}"
    viewer = await add_member(client, owner, "viewer", name="Viewer")
    admin = await add_member(client, owner, "admin", name="Admin")
    member = await add_member(client, owner, "member", name="Member")
    for account, shown in [
        (viewer, "https://hooks.example.com/…"),
        (member, secret_url),
        (admin, secret_url),
        (owner, secret_url),
    ]:
        read = await client.get(one, headers=account.headers)
        listed = await client.get(hooks(project["id"]), headers=account.headers)
        deliveries = await client.get(f"{one}/deliveries", headers=account.headers)
        assert read.json()["url"] == shown
        assert [item["url"] for item in listed.json()["items"]] == [shown]
        if account is viewer:
            for response in (read, listed, deliveries):
                assert "SECRET" not in response.text


async def test_the_api_document_says_who_reads_a_webhook_url_whole(client):
    document = (await client.get("/openapi.json")).json()
    described = document["components"]["schemas"]["WebhookRead"]["properties"]["url"]
    assert "viewer sees its scheme and host only" in described["description"]


async def test_rotation_keeps_the_previous_secret_for_the_overlap(client, database, runtime):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"])
    url = f"{hooks(project['id'])}/{created['id']}"
    before = datetime.now(UTC)
    rotated = await client.post(f"{url}/rotate-secret", headers=owner.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["secret"].startswith("whsec_") and new["secret"] != created["secret"]
    expires = datetime.fromisoformat(new["previous_secret_expires_at"])
    overlap = timedelta(hours=runtime.settings.webhook_secret_overlap_hours)
    assert before + overlap <= expires <= datetime.now(UTC) + overlap
    read = (await client.get(url, headers=owner.headers)).json()
    assert datetime.fromisoformat(read["previous_secret_expires_at"]) == expires
    assert "secret" not in read

    async with tenant(database, owner.organization_id) as session:
        row = await session.get(Webhook, uuid.UUID(created["id"]))
        assert row is not None
        box = runtime.secret_box
        during = signing_secrets(row, box, datetime.now(UTC))
        assert during == [new["secret"], created["secret"]]
        after = signing_secrets(row, box, expires + timedelta(seconds=1))
        assert after == [new["secret"]]


async def test_without_an_overlap_the_previous_secret_stops_at_once(client, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "webhook_secret_overlap_hours", 0)
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"])
    url = f"{hooks(project['id'])}/{created['id']}"
    rotated = (await client.post(f"{url}/rotate-secret", headers=owner.headers)).json()
    assert rotated["previous_secret_expires_at"] is None


async def test_a_test_message_is_queued_and_logged(client, database, runtime):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"])
    url = f"{hooks(project['id'])}/{created['id']}"
    sent = await client.post(f"{url}/test", headers=owner.headers)
    assert sent.status_code == 202, sent.text
    delivery = sent.json()
    assert delivery["event_type"] == "webhook.test"
    assert delivery["status"] == "pending" and delivery["attempts"] == 0
    assert delivery["message_id"].startswith("msg_")
    assert delivery["payload"]["type"] == "webhook.test"
    assert delivery["payload"]["data"]["webhook_id"] == created["id"]
    second = (await client.post(f"{url}/test", headers=owner.headers)).json()
    assert second["message_id"] != delivery["message_id"]

    log = (await client.get(f"{url}/deliveries", headers=owner.headers)).json()
    assert log["total"] == 2
    assert [item["id"] for item in log["items"]] == [second["id"], delivery["id"]]  # newest first
    filtered = await client.get(
        f"{url}/deliveries", params={"status": "delivered"}, headers=owner.headers
    )
    assert filtered.json()["total"] == 0
    tests_only = await client.get(
        f"{url}/deliveries", params={"event_type": "webhook.test"}, headers=owner.headers
    )
    assert tests_only.json()["total"] == 2
    unknown = await client.get(
        f"{url}/deliveries", params={"event_type": "run.finished"}, headers=owner.headers
    )
    assert_problem(unknown, 422, field="event_type")

    async with tenant(database, owner.organization_id) as session:
        jobs = (await session.scalars(select(Job).where(Job.kind == DELIVERY_JOB))).all()
    assert sorted(job.payload["delivery_id"] for job in jobs) == sorted(
        [delivery["id"], second["id"]]
    )
    assert {job.max_attempts for job in jobs} == {runtime.settings.webhook_max_attempts}

    # Pending: nothing to redeliver yet; an unknown delivery is not found.
    redeliver = f"{url}/deliveries/{delivery['id']}/redeliver"
    assert_problem(await client.post(redeliver, headers=owner.headers), 409)
    unknown = f"{url}/deliveries/{uuid.uuid4()}/redeliver"
    assert_problem(await client.post(unknown, headers=owner.headers), 404)

    await client.patch(url, json={"enabled": False}, headers=owner.headers)
    assert_problem(await client.post(f"{url}/test", headers=owner.headers), 409)


async def test_deleting_a_webhook_deletes_its_log(client):
    owner = await register(client)
    project = await create_project(client, owner)
    created = await _webhook(client, owner, project["id"])
    url = f"{hooks(project['id'])}/{created['id']}"
    await client.post(f"{url}/test", headers=owner.headers)
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    assert_problem(await client.get(f"{url}/deliveries", headers=owner.headers), 404)
    assert (await client.get(hooks(project["id"]), headers=owner.headers)).json()["total"] == 0


async def test_a_project_has_at_most_twenty_webhooks(client):
    """Every run's end fans out to each of them: the fan-out is bounded."""
    from database.projects.webhooks import MAX_WEBHOOKS_PER_PROJECT

    owner = await register(client)
    project = await create_project(client, owner)
    other = await create_project(client, owner)
    for _ in range(MAX_WEBHOOKS_PER_PROJECT):
        await _webhook(client, owner, project["id"])
    refused = await client.post(
        hooks(project["id"]), json={"url": URL, "events": ["run.completed"]}, headers=owner.headers
    )
    assert_problem(refused, 409)
    assert "20 webhooks" in refused.json()["detail"]
    listed = await client.get(hooks(project["id"]), params={"limit": 50}, headers=owner.headers)
    assert listed.json()["total"] == MAX_WEBHOOKS_PER_PROJECT
    await _webhook(client, owner, other["id"])  # per project
