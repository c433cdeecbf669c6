"""The audit log itself: what an entry tells, who may read it, filters and pages, and the
guarantees: one transaction with the change, append-only for the runtime, row-level security."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.main import create_app
from database.core import Tenant
from database.deps import CurrentPrincipal, DbSession
from database.organizations.audit import RequestMetaDep, record
from tests.database.organizations.audit_helpers import audit_entries, audit_url, only_entry
from tests.helpers import (
    Account,
    add_member,
    assert_problem,
    bearer,
    create_api_key,
    create_project,
    register,
)
from utils.errors import Conflict

PEER = "203.0.113.10"  # the test client's socket address (tests/conftest.py)


async def _keys(client: httpx.AsyncClient, owner: Account, count: int) -> list[str]:
    """Makes `count` API keys (one audit entry each); their ids, oldest first."""
    return [(await create_api_key(client, owner, "viewer"))["id"] for _ in range(count)]


# --- what an entry tells --------------------------------------------------------------------


async def test_an_entry_names_the_actor_the_address_the_user_agent_and_the_request(client):
    owner = await register(client)
    response = await client.post(
        f"/api/v1/organizations/{owner.organization_id}/api-keys",
        json={"name": "deploy"},
        headers={
            **owner.headers,
            "User-Agent": "assay-cli/1.2",
            "X-Request-ID": "audit-request-42",
            # Believed only from a proxy the server is told to trust (none here).
            "X-Forwarded-For": "198.51.100.99",
        },
    )
    assert response.status_code == 201, response.text
    entry = await only_entry(client, owner, "api_key.created")
    assert entry["actor_kind"] == "user"
    assert entry["actor_user_id"] == str(owner.user_id)
    assert entry["actor_api_key_id"] is None
    assert entry["ip"] == PEER
    assert entry["user_agent"] == "assay-cli/1.2"
    assert entry["request_id"] == "audit-request-42"
    written = datetime.fromisoformat(entry["created_at"])
    assert abs(datetime.now(UTC) - written) < timedelta(minutes=1)


async def test_an_api_key_acting_is_the_actor(client):
    owner = await register(client)
    key = await create_api_key(client, owner, "admin")
    response = await client.post(
        f"/api/v1/organizations/{owner.organization_id}/api-keys",
        json={"name": "made by a key"},
        headers=bearer(key["key"]),
    )
    assert response.status_code == 201, response.text
    [made_by_key, _] = await audit_entries(client, owner, action="api_key.created")
    assert made_by_key["actor_kind"] == "api_key"
    assert made_by_key["actor_api_key_id"] == key["id"]
    assert made_by_key["actor_user_id"] is None
    # An admin key reads the log too.
    read = await client.get(audit_url(owner.organization_id), headers=bearer(key["key"]))
    assert read.status_code == 200, read.text


# --- who may read it ------------------------------------------------------------------------


async def test_admins_and_owners_read_the_log_members_and_viewers_are_refused(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    member = await add_member(client, owner, "member")
    viewer = await add_member(client, owner, "viewer")
    member_key = await create_api_key(client, owner, "member")
    for account in (owner, admin):
        response = await client.get(audit_url(owner.organization_id), headers=account.headers)
        assert response.status_code == 200, response.text
        assert response.json()["total"] == 7  # three invitations sent and accepted, one key
    for headers in (member.headers, viewer.headers, bearer(member_key["key"])):
        response = await client.get(audit_url(owner.organization_id), headers=headers)
        assert_problem(response, 403)
    assert_problem(await client.get(audit_url(owner.organization_id)), 401)


async def test_another_organizations_log_is_a_404_and_its_rows_are_invisible(client, database):
    first = await register(client)
    second = await register(client)
    await _keys(client, first, 2)
    await _keys(client, second, 1)
    # An owner asking for another organization's log: a 404, as for any of its resources.
    response = await client.get(audit_url(first.organization_id), headers=second.headers)
    assert_problem(response, 404)
    assert [e["action"] for e in await audit_entries(client, second)] == ["api_key.created"]
    # Row-level security: a transaction acting for one organization sees its rows only, and
    # one acting for none sees none.
    for tenant, expected in (
        (first.organization_id, {first.organization_id: 2}),
        (second.organization_id, {second.organization_id: 1}),
        (None, {}),
    ):
        async with database.transaction(Tenant(tenant)) as session:
            rows = await session.execute(
                text("SELECT organization_id, count(*) FROM audit_log GROUP BY 1")
            )
            assert dict(rows.all()) == expected


# --- filters and pages ----------------------------------------------------------------------


async def test_filters_narrow_by_action_actor_target_and_time(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    key = await create_api_key(client, owner, "admin")
    project = await create_project(client, owner)
    await client.delete(f"/api/v1/projects/{project['id']}", headers=bearer(key["key"]))
    by_admin = await create_api_key(client, admin, "viewer")
    everything = await audit_entries(client, owner)
    assert [e["action"] for e in everything] == [
        "api_key.created",
        "project.deleted",
        "api_key.created",
        "invitation.accepted",
        "invitation.sent",
    ]

    async def actions(**params: str) -> list[str]:
        return [e["action"] for e in await audit_entries(client, owner, **params)]

    assert await actions(action="project.deleted") == ["project.deleted"]
    assert await actions(actor_user_id=str(admin.user_id)) == [
        "api_key.created",
        "invitation.accepted",
    ]
    assert await actions(actor_api_key_id=key["id"]) == ["project.deleted"]
    assert await actions(target_type="api_key") == ["api_key.created", "api_key.created"]
    [entry] = await audit_entries(client, owner, target_id=by_admin["id"])
    assert entry["actor_user_id"] == str(admin.user_id)
    assert await actions(target_type="api_key", actor_user_id=str(owner.user_id)) == [
        "api_key.created"
    ]
    # since is inclusive, until exclusive: one moment splits the log in two.
    moment = everything[1]["created_at"]
    newer = await actions(since=moment)
    older = await actions(until=moment)
    assert newer + older == [e["action"] for e in everything]
    assert newer[-1] == "project.deleted"


async def test_pages_run_newest_first_and_new_entries_do_not_shift_them(client):
    owner = await register(client)
    ids = await _keys(client, owner, 5)
    url = audit_url(owner.organization_id)
    first = await client.get(url, params={"limit": 2}, headers=owner.headers)
    assert first.status_code == 200, first.text
    page = first.json()
    assert (page["total"], page["limit"]) == (5, 2)
    assert [e["target_id"] for e in page["items"]] == [ids[4], ids[3]]
    # A newer entry comes in between pages: the next pages go on from where the first ended.
    await _keys(client, owner, 1)
    seen = [e["target_id"] for e in page["items"]]
    while page["next_cursor"] is not None:
        response = await client.get(
            url, params={"limit": 2, "cursor": page["next_cursor"]}, headers=owner.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == 6
        seen += [e["target_id"] for e in page["items"]]
    assert seen == ids[::-1]
    # A page that ends exactly at the last entry says there is no next one.
    whole = (await client.get(url, params={"limit": 6}, headers=owner.headers)).json()
    assert (len(whole["items"]), whole["next_cursor"]) == (6, None)


async def test_a_cursor_pages_through_a_filtered_log(client):
    owner = await register(client)
    ids = []
    for _ in range(3):  # keys and deletions in turn: the filter keeps the keys
        ids += await _keys(client, owner, 1)
        project = await create_project(client, owner)
        await client.delete(f"/api/v1/projects/{project['id']}", headers=owner.headers)
    params = {"limit": 1, "target_type": "api_key"}
    url = audit_url(owner.organization_id)
    page = (await client.get(url, params=params, headers=owner.headers)).json()
    assert page["total"] == 3
    seen = [page["items"][0]["target_id"]]
    while page["next_cursor"]:
        response = await client.get(
            url, params={**params, "cursor": page["next_cursor"]}, headers=owner.headers
        )
        page = response.json()
        seen += [e["target_id"] for e in page["items"]]
    assert seen == ids[::-1]


# A cursor of 9999-12-31T23:59:59-14:00: past year 9999 once in UTC.
FAR_CURSOR = "OTk5OS0xMi0zMVQyMzo1OTo1OS0xNDowMHwwMWEyNDIxMy1kOTNjLTdmMjQtYWUyZS04Y2NjMTg1ZmQwMjA"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "MjAyNi0xMi0wMlQwOTozMDowMHxub3QtYS11dWlk"}, "cursor"),  # "...|not-a-uuid"
        ({"since": "2026-12-02T09:30:00"}, "since"),  # no timezone
        ({"since": "2026-12-02T10:00:00Z", "until": "2026-12-02T09:00:00Z"}, "until"),
        # Past the years a moment is stored in, once in UTC.
        ({"since": "9999-12-31T23:59:59-14:00"}, "since"),
        ({"until": "0001-01-01T00:00:00+14:00"}, "until"),
        ({"cursor": FAR_CURSOR}, "cursor"),
        ({"action": "Drop Table"}, "action"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"target_id": "42"}, "target_id"),
    ],
)
async def test_bad_query_values_are_a_422_naming_the_field(client, params, field):
    owner = await register(client)
    response = await client.get(
        audit_url(owner.organization_id), params=params, headers=owner.headers
    )
    assert_problem(response, 422, field=field)


# --- one transaction with the change --------------------------------------------------------


async def test_a_refused_change_writes_no_entry(client):
    owner = await register(client)
    admin = await add_member(client, owner, "admin")
    members_url = f"/api/v1/organizations/{owner.organization_id}/members"
    # An admin may not grant the owner role; the last owner may not leave.
    promoted = await client.patch(
        f"{members_url}/{admin.user_id}", json={"role": "owner"}, headers=admin.headers
    )
    assert_problem(promoted, 403)
    leaving = await client.delete(f"{members_url}/{owner.user_id}", headers=owner.headers)
    assert_problem(leaving, 409)
    actions = [e["action"] for e in await audit_entries(client, owner)]
    assert actions == ["invitation.accepted", "invitation.sent"]


@pytest.fixture
async def failing_client(database) -> AsyncIterator[httpx.AsyncClient]:
    """The app with one more route, which records an entry and then fails."""
    app = create_app()
    router = APIRouter()

    @router.post("/api/v1/recorded-then-failed")
    async def recorded_then_failed(
        session: DbSession, principal: CurrentPrincipal, meta: RequestMetaDep
    ) -> None:
        await record(
            session,
            principal,
            action="project.deleted",
            target_type="project",
            target_id=uuid.uuid4(),
            request_meta=meta,
        )
        raise Conflict("Failed after the entry was written")

    app.include_router(router)
    transport = httpx.ASGITransport(app=app, client=(PEER, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as http:
        yield http


async def test_a_request_that_fails_after_recording_leaves_no_entry(client, failing_client):
    owner = await register(client)
    await _keys(client, owner, 1)
    response = await failing_client.post("/api/v1/recorded-then-failed", headers=owner.headers)
    assert_problem(response, 409)
    assert [e["action"] for e in await audit_entries(client, owner)] == ["api_key.created"]


# --- append-only ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'api_key.restored', details = '{}'",
        "UPDATE audit_log SET organization_id = gen_random_uuid() WHERE false",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE false",
        "TRUNCATE audit_log",
    ],
)
async def test_the_runtime_role_cannot_change_or_remove_entries(client, database, statement):
    owner = await register(client)
    await _keys(client, owner, 2)
    with pytest.raises(DBAPIError) as refused:
        async with database.transaction(Tenant(owner.organization_id)) as session:
            await session.execute(text(statement))
    assert refused.value.orig.sqlstate == "42501"  # type: ignore[union-attr]
    assert "permission denied" in str(refused.value.orig)
    entries = await audit_entries(client, owner)
    assert [e["action"] for e in entries] == ["api_key.created"] * 2


async def test_the_runtime_role_is_granted_only_to_add_and_read_entries(database):
    """Not just refused by the triggers: the grant itself is SELECT and INSERT."""
    async with database.transaction() as session:
        granted = {
            privilege: await session.scalar(
                text("SELECT has_table_privilege(current_user, 'audit_log', :p)"),
                {"p": privilege},
            )
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
        }
    assert granted == {
        "SELECT": True,
        "INSERT": True,
        "UPDATE": False,
        "DELETE": False,
        "TRUNCATE": False,
    }
