"""Each audited change writes one entry naming the actor, the target and what changed: members
and roles, invitations, API keys, model configurations (which secrets, never their values),
deletions, and the organization itself."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.database.organizations.audit_helpers import audit_entries, only_entry
from tests.helpers import (
    accept_invitation,
    add_member,
    bearer,
    create_api_key,
    create_model,
    create_project,
    create_test,
    create_test_set,
    invite,
    register,
    tenant_session,
    unique_email,
)


def org_url(organization_id: uuid.UUID, rest: str = "") -> str:
    return f"/api/v1/organizations/{organization_id}{rest}"


def _by_user(entry: dict, user_id: uuid.UUID) -> bool:
    return (entry["actor_kind"], entry["actor_user_id"], entry["actor_api_key_id"]) == (
        "user",
        str(user_id),
        None,
    )


# --- members and roles ----------------------------------------------------------------------


async def test_a_role_change_records_the_old_and_new_role(client):
    owner = await register(client)
    member = await add_member(client, owner, "member")
    response = await client.patch(
        org_url(owner.organization_id, f"/members/{member.user_id}"),
        json={"role": "admin"},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    entry = await only_entry(client, owner, "member.role_changed")
    assert _by_user(entry, owner.user_id)
    assert (entry["target_type"], entry["target_id"]) == ("member", str(member.user_id))
    assert entry["details"] == {"from": "member", "to": "admin"}
    # The same role again changes nothing, and records nothing.
    again = await client.patch(
        org_url(owner.organization_id, f"/members/{member.user_id}"),
        json={"role": "admin"},
        headers=owner.headers,
    )
    assert again.status_code == 200, again.text
    assert len(await audit_entries(client, owner, action="member.role_changed")) == 1


async def test_an_ownership_transfer_records_both_role_changes(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    response = await client.post(
        org_url(owner.organization_id, "/transfer-ownership"),
        json={"user_id": str(admin.user_id)},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    entries = await audit_entries(client, owner, action="member.role_changed")
    changes = {entry["target_id"]: entry["details"] for entry in entries}
    assert changes == {
        str(admin.user_id): {"from": "admin", "to": "owner", "via": "ownership_transfer"},
        str(owner.user_id): {"from": "owner", "to": "admin", "via": "ownership_transfer"},
    }
    assert all(_by_user(entry, owner.user_id) for entry in entries)


async def test_removing_a_member_records_their_role_and_the_keys_that_went_with_them(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    await create_api_key(client, admin, "viewer")
    await create_api_key(client, admin, "member")
    response = await client.delete(
        org_url(owner.organization_id, f"/members/{admin.user_id}"), headers=owner.headers
    )
    assert response.status_code == 204, response.text
    entry = await only_entry(client, owner, "member.removed")
    assert _by_user(entry, owner.user_id)
    assert (entry["target_type"], entry["target_id"]) == ("member", str(admin.user_id))
    assert entry["details"] == {
        "role": "admin",
        "left": False,
        "api_keys_revoked": 2,
        "invitations_revoked": 0,
    }


INVITED = ("admin", "member")


async def test_a_demotion_revokes_the_keys_and_invitations_above_the_new_role(client):
    """An admin key kept by an admin made a member would keep what the demotion took away
    (and could give it back): what they made that grants more than they now hold goes."""
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    admin_key = (await create_api_key(client, admin, "admin"))["key"]
    member_key = (await create_api_key(client, admin, "member"))["key"]
    sent = {role: (await invite(client, admin, unique_email(), role))["id"] for role in INVITED}
    member_url = org_url(owner.organization_id, f"/members/{admin.user_id}")

    demoted = await client.patch(member_url, json={"role": "member"}, headers=owner.headers)
    assert demoted.status_code == 200, demoted.text
    again = await client.patch(member_url, json={"role": "admin"}, headers=bearer(admin_key))
    assert again.status_code == 401, again.text
    kept = await client.get("/api/v1/projects", headers=bearer(member_key))
    assert kept.status_code == 200, kept.text
    entry = await only_entry(client, owner, "member.role_changed")
    assert entry["details"] == {
        "from": "admin",
        "to": "member",
        "api_keys_revoked": 1,
        "invitations_revoked": 1,
    }
    invitations = await client.get(
        org_url(owner.organization_id, "/invitations"), headers=owner.headers
    )
    revoked = {i["id"]: i["revoked_at"] is not None for i in invitations.json()["items"]}
    assert {role: revoked[sent[role]] for role in INVITED} == {"admin": True, "member": False}


async def test_leaving_is_recorded_with_the_member_as_actor(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    response = await client.delete(
        org_url(owner.organization_id, f"/members/{viewer.user_id}"), headers=viewer.headers
    )
    assert response.status_code == 204, response.text
    entry = await only_entry(client, owner, "member.removed")
    assert _by_user(entry, viewer.user_id)
    assert entry["details"] == {
        "role": "viewer",
        "left": True,
        "api_keys_revoked": 0,
        "invitations_revoked": 0,
    }


# --- invitations ----------------------------------------------------------------------------


async def test_invitations_sent_accepted_and_revoked_are_recorded(client):
    owner = await register(client)
    invitee = await register(client)
    sent = await invite(client, owner, invitee.email, "admin")
    entry = await only_entry(client, owner, "invitation.sent")
    assert _by_user(entry, owner.user_id)
    assert (entry["target_type"], entry["target_id"]) == ("invitation", sent["id"])
    assert entry["details"] == {"email": invitee.email, "role": "admin"}
    assert sent["token"] not in str(entry)

    accepted = await accept_invitation(client, invitee, sent["token"])
    assert accepted.status_code == 200, accepted.text
    # In the inviting organization's log, by the invitee (who acted from their own one).
    entry = await only_entry(client, owner, "invitation.accepted")
    assert _by_user(entry, invitee.user_id)
    assert entry["target_id"] == sent["id"]
    assert entry["details"] == {
        "email": invitee.email,
        "role": "admin",
        "user_id": str(invitee.user_id),
    }
    assert await audit_entries(client, invitee, action="invitation.accepted") == []

    email = unique_email()
    pending = await invite(client, owner, email)
    for _ in range(2):  # revoking twice is no error, and one change
        revoked = await client.delete(
            org_url(owner.organization_id, f"/invitations/{pending['id']}"),
            headers=owner.headers,
        )
        assert revoked.status_code == 204, revoked.text
    entry = await only_entry(client, owner, "invitation.revoked")
    assert (entry["target_id"], entry["details"]) == (
        pending["id"],
        {"email": email, "role": "member"},
    )


# --- API keys -------------------------------------------------------------------------------


async def test_api_keys_created_and_revoked_are_recorded_never_their_secret(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "viewer", expires_at="2099-01-01T00:00:00Z")
    entry = await only_entry(client, owner, "api_key.created")
    assert _by_user(entry, owner.user_id)
    assert (entry["target_type"], entry["target_id"]) == ("api_key", key["id"])
    assert entry["details"] == {
        "name": "viewer key",
        "role": "viewer",
        "expires_at": "2099-01-01T00:00:00Z",
    }
    for _ in range(2):
        response = await client.delete(
            org_url(owner.organization_id, f"/api-keys/{key['id']}"), headers=owner.headers
        )
        assert response.status_code == 204, response.text
    entry = await only_entry(client, owner, "api_key.revoked")
    assert entry["details"] == {"name": "viewer key", "role": "viewer", "keys_made_with_it": 0}
    log = await client.get(org_url(owner.organization_id, "/audit-log"), headers=owner.headers)
    assert key["key"] not in log.text
    assert key["key"][len(key["display_prefix"]) :] not in log.text


# --- model configurations -------------------------------------------------------------------


async def test_model_configurations_record_which_secrets_were_set_or_cleared(client, database):
    owner = await register(client)
    secrets = [f"{kind}-{uuid.uuid4().hex}" for kind in ("sk", "sk-rotated", "hdr", "team")]

    async def call(method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        response = await client.request(
            method, f"/api/v1/models{path}", json=body, headers=owner.headers
        )
        assert response.status_code == expect, response.text
        return response.json() if response.content else {}

    hosted = await call(
        "POST",
        "",
        {"name": "hosted", "provider": "openai", "model": "gpt-4o-mini", "api_key": secrets[0]},
        expect=201,
    )
    await call("PATCH", f"/{hosted['id']}", {"api_key": secrets[1], "timeout_seconds": 20})
    # A hosted provider needs its key: clearing it is refused, and records nothing.
    await call("PATCH", f"/{hosted['id']}", {"api_key": None}, expect=422)
    target = {
        "url": "https://app.example.com/chat",
        "response_path": "$.answer",
        "headers": {"Authorization": f"Bearer {secrets[2]}", "X-Team": secrets[3]},
    }
    endpoint = await call(
        "POST", "", {"name": "endpoint", "provider": "http", "http": target}, expect=201
    )
    narrower = {**target, "headers": {"Authorization": f"Bearer {secrets[2]}"}}
    await call("PATCH", f"/{endpoint['id']}", {"http": narrower, "name": "endpoint v2"})
    compatible = await call(
        "POST",
        "",
        {
            "name": "compatible",
            "provider": "openai-compatible",
            "model": "m",
            "base_url": "https://llm.example.com/v1",
            "api_key": secrets[0],
        },
        expect=201,
    )
    await call("PATCH", f"/{compatible['id']}", {"api_key": None})
    await call("DELETE", f"/{compatible['id']}", expect=204)

    created = {
        e["target_id"]: e["details"]
        for e in await audit_entries(client, owner, action="model.created")
    }
    assert created == {
        hosted["id"]: {"name": "hosted", "provider": "openai", "secrets_set": ["api_key"]},
        endpoint["id"]: {
            "name": "endpoint",
            "provider": "http",
            "secrets_set": ["http.headers.Authorization", "http.headers.X-Team"],
        },
        compatible["id"]: {
            "name": "compatible",
            "provider": "openai-compatible",
            "secrets_set": ["api_key"],
        },
    }
    updated = {
        e["target_id"]: e["details"]
        for e in await audit_entries(client, owner, action="model.updated")
    }
    assert updated == {
        hosted["id"]: {
            "name": "hosted",
            "fields": ["timeout_seconds"],
            "secrets_set": ["api_key"],
            "secrets_cleared": [],
        },
        endpoint["id"]: {
            "name": "endpoint v2",
            "fields": ["http", "name"],
            "secrets_set": ["http.headers.Authorization"],
            "secrets_cleared": ["http.headers.X-Team"],
        },
        compatible["id"]: {
            "name": "compatible",
            "fields": [],
            "secrets_set": [],
            "secrets_cleared": ["api_key"],
        },
    }
    deleted = await only_entry(client, owner, "model.deleted")
    assert (deleted["target_id"], deleted["details"]) == (
        compatible["id"],
        {"name": "compatible", "provider": "openai-compatible"},
    )
    # No secret value anywhere: not in what the API shows, not in the stored rows.
    shown = (
        await client.get(org_url(owner.organization_id, "/audit-log"), headers=owner.headers)
    ).text
    async with tenant_session(database, owner.organization_id) as session:
        stored = (
            (await session.execute(text("SELECT CAST(audit_log AS text) FROM audit_log")))
            .scalars()
            .all()
        )
    assert len(stored) == 7
    for secret in secrets:
        assert secret not in shown
        assert all(secret not in row for row in stored)


async def _details_by_target(client, account, action: str) -> dict[str, dict]:
    return {
        e["target_id"]: e["details"] for e in await audit_entries(client, account, action=action)
    }


# --- deletions ------------------------------------------------------------------------------


async def test_every_deletion_is_recorded_with_what_was_deleted(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "admin")
    project = await create_project(client, owner, name="doomed")
    test = await create_test(client, owner, project["id"])
    test_set = await create_test_set(client, owner, project["id"], name="set to go")
    prompt = await client.post(
        "/api/v1/prompts",
        json={"project_id": project["id"], "name": "greeting", "template": "Hi {{ input }}"},
        headers=owner.headers,
    )
    metric = await client.post(
        "/api/v1/metrics",
        json={"project_id": project["id"], "name": "json", "type": "is-json"},
        headers=owner.headers,
    )
    model = await create_model(client, owner, name="old demo")
    assert prompt.status_code == metric.status_code == 201
    deletions = [
        ("test", test["id"], {"project_id": project["id"]}),
        ("test_set", test_set["id"], {"name": "set to go", "project_id": project["id"]}),
        ("prompt", prompt.json()["id"], {"name": "greeting", "project_id": project["id"]}),
        (
            "metric",
            metric.json()["id"],
            {"name": "json", "type": "is-json", "project_id": project["id"]},
        ),
        ("model", model["id"], {"name": "old demo", "provider": "demo"}),
        ("project", project["id"], {"name": "doomed"}),
    ]
    paths = {
        "test": "tests",
        "test_set": "test-sets",
        "prompt": "prompts",
        "metric": "metrics",
        "model": "models",
        "project": "projects",
    }
    for kind, target_id, _ in deletions:  # an API key acts: it is the actor
        response = await client.delete(
            f"/api/v1/{paths[kind]}/{target_id}", headers=bearer(key["key"])
        )
        assert response.status_code == 204, response.text
    for kind, target_id, details in deletions:
        entry = await only_entry(client, owner, f"{kind}.deleted")
        assert (entry["actor_kind"], entry["actor_user_id"]) == ("api_key", None)
        assert entry["actor_api_key_id"] == key["id"]
        assert (entry["target_type"], entry["target_id"], entry["details"]) == (
            kind,
            target_id,
            details,
        )


# --- the organization -----------------------------------------------------------------------


async def test_renaming_and_deleting_the_organization_are_recorded(client, database):
    owner = await register(client, organization_name="Before")
    for name in ("After", "After"):  # the second changes nothing
        response = await client.patch(
            org_url(owner.organization_id), json={"name": name}, headers=owner.headers
        )
        assert response.status_code == 200, response.text
    entry = await only_entry(client, owner, "organization.renamed")
    assert _by_user(entry, owner.user_id)
    assert (entry["target_type"], entry["target_id"]) == (
        "organization",
        str(owner.organization_id),
    )
    assert entry["details"] == {"from": "Before", "to": "After"}

    response = await client.delete(org_url(owner.organization_id), headers=owner.headers)
    assert response.status_code == 204, response.text
    # The organization is gone; its log is not (the operator reads it).
    async with tenant_session(database, owner.organization_id) as session:
        rows = (
            await session.execute(
                text("SELECT action, actor_user_id, details FROM audit_log ORDER BY created_at, id")
            )
        ).all()
    assert [row.action for row in rows] == ["organization.renamed", "organization.deleted"]
    assert rows[-1].actor_user_id == owner.user_id
    assert rows[-1].details == {"name": "After"}


async def test_webhook_changes_are_recorded_never_the_secret_or_a_url_token(client, database):
    owner = await register(client)
    project = await create_project(client, owner)
    hooks = f"/api/v1/projects/{project['id']}/webhooks"
    created = await client.post(
        hooks,
        json={
            "url": "https://hooks.example.com/in/T0K-path?token=tok-4f9a",
            "events": ["run.completed"],
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    changed = await client.patch(
        f"{hooks}/{hook['id']}", json={"enabled": False}, headers=owner.headers
    )
    assert changed.status_code == 200, changed.text
    rotated = await client.post(f"{hooks}/{hook['id']}/rotate-secret", headers=owner.headers)
    assert rotated.status_code == 200, rotated.text
    deleted = await client.delete(f"{hooks}/{hook['id']}", headers=owner.headers)
    assert deleted.status_code == 204, deleted.text

    entries = {
        action: await only_entry(client, owner, action)
        for action in (
            "webhook.created",
            "webhook.updated",
            "webhook.secret_rotated",
            "webhook.deleted",
        )
    }
    for entry in entries.values():
        assert entry["target_type"] == "webhook" and entry["target_id"] == hook["id"]
        assert entry["actor_user_id"] == str(owner.user_id)
    assert entries["webhook.created"]["details"] == {
        "project_id": project["id"],
        "url": "https://hooks.example.com",
        "events": ["run.completed"],
        "enabled": True,
    }
    assert entries["webhook.updated"]["details"]["changed"] == ["enabled"]
    assert entries["webhook.updated"]["details"]["enabled"] is False
    assert entries["webhook.secret_rotated"]["details"]["previous_secret_expires_at"]
    async with tenant_session(database, owner.organization_id) as session:
        stored = await session.scalar(
            text("SELECT string_agg(details::text, ' ') FROM audit_log WHERE target_type = :t"),
            {"t": "webhook"},
        )
    for secret in (hook["secret"], rotated.json()["secret"], "tok-4f9a", "T0K-path"):
        assert secret not in stored
