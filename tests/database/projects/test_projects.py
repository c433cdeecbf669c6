from __future__ import annotations

import uuid

import pytest

from tests.helpers import (
    add_member,
    assert_problem,
    create_model,
    create_project,
    create_test,
    register,
)

PROJECTS = "/api/v1/projects"


async def test_create_read_update_delete(client):
    owner = await register(client)
    target = await create_model(client, owner)
    created = await client.post(
        PROJECTS,
        json={
            "name": "  Support bot  ",
            "description": "Answers tickets",
            "default_target_model_id": target["id"],
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["name"] == "Support bot"
    assert project["description"] == "Answers tickets"
    assert project["default_target_model_id"] == target["id"]
    assert project["default_judge_model_id"] is None

    url = f"{PROJECTS}/{project['id']}"
    assert (await client.get(url, headers=owner.headers)).json() == project

    judge = await create_model(client, owner)
    patched = await client.patch(
        url,
        json={"description": None, "default_judge_model_id": judge["id"]},
        headers=owner.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["description"]) == ("Support bot", None)
    assert (body["default_target_model_id"], body["default_judge_model_id"]) == (
        target["id"],
        judge["id"],
    )

    deleted = await client.delete(url, headers=owner.headers)
    assert deleted.status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)


async def test_deleting_a_project_deletes_its_tests(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"])
    await client.delete(f"{PROJECTS}/{project['id']}", headers=owner.headers)
    assert_problem(await client.get(f"/api/v1/tests/{test['id']}", headers=owner.headers), 404)


async def test_list_filters_by_name_and_paginates_with_total(client):
    owner = await register(client)
    for name in ("Gamma chat", "Alpha chat", "Beta search", "50% off"):
        await create_project(client, owner, name=name)

    listed = (await client.get(PROJECTS, params={"limit": 2}, headers=owner.headers)).json()
    assert listed["total"] == 4
    assert [p["name"] for p in listed["items"]] == ["50% off", "Alpha chat"]
    rest = (
        await client.get(PROJECTS, params={"limit": 2, "offset": 2}, headers=owner.headers)
    ).json()
    assert [p["name"] for p in rest["items"]] == ["Beta search", "Gamma chat"]

    chat = (await client.get(PROJECTS, params={"q": "CHAT"}, headers=owner.headers)).json()
    assert (chat["total"], {p["name"] for p in chat["items"]}) == (2, {"Gamma chat", "Alpha chat"})
    percent = (await client.get(PROJECTS, params={"q": "%"}, headers=owner.headers)).json()
    assert [p["name"] for p in percent["items"]] == ["50% off"]  # a literal %, not a wildcard


async def test_names_are_unique_per_organization(client):
    owner = await register(client)
    other = await register(client)
    await create_project(client, owner, name="Shared name")
    duplicate = await client.post(PROJECTS, json={"name": "Shared name"}, headers=owner.headers)
    assert "already exists" in assert_problem(duplicate, 409)["detail"]
    await create_project(client, other, name="Shared name")  # another organization may

    second = await create_project(client, owner, name="Second")
    renamed = await client.patch(
        f"{PROJECTS}/{second['id']}", json={"name": "Shared name"}, headers=owner.headers
    )
    assert_problem(renamed, 409)
    assert (await client.get(f"{PROJECTS}/{second['id']}", headers=owner.headers)).json()[
        "name"
    ] == "Second"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "P", "description": "d" * 10_001}, "description"),
        ({"name": "P", "default_target_model_id": "not-a-uuid"}, "default_target_model_id"),
        ({"name": "P", "organization_id": str(uuid.uuid4())}, "organization_id"),
        ({"name": "P", "colour": "blue"}, "colour"),
    ],
)
async def test_bad_create_bodies_name_the_field(client, body, field):
    owner = await register(client)
    response = await client.post(PROJECTS, json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)


async def test_nul_character_in_name_is_refused_with_422(client):
    owner = await register(client)
    response = await client.post(PROJECTS, json={"name": "a\x00b"}, headers=owner.headers)
    assert_problem(response, 422, field="name")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"owner": "me"}, "owner"),
    ],
)
async def test_bad_update_bodies_name_the_field(client, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await client.patch(f"{PROJECTS}/{project['id']}", json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)


@pytest.mark.parametrize("field", ["default_target_model_id", "default_judge_model_id"])
async def test_defaults_cannot_point_at_another_organizations_model(client, field):
    owner = await register(client)
    stranger = await register(client)
    foreign = await create_model(client, stranger)

    created = await client.post(
        PROJECTS, json={"name": "P", field: foreign["id"]}, headers=owner.headers
    )
    assert_problem(created, 422, field=field)
    unknown = await client.post(
        PROJECTS, json={"name": "P", field: str(uuid.uuid4())}, headers=owner.headers
    )
    assert_problem(unknown, 422, field=field)

    project = await create_project(client, owner)
    patched = await client.patch(
        f"{PROJECTS}/{project['id']}", json={field: foreign["id"]}, headers=owner.headers
    )
    assert_problem(patched, 422, field=field)
    assert (await client.get(f"{PROJECTS}/{project['id']}", headers=owner.headers)).json()[
        field
    ] is None


async def test_a_default_can_be_cleared_and_is_cleared_when_its_model_is_deleted(client):
    owner = await register(client)
    target, judge = await create_model(client, owner), await create_model(client, owner)
    project = await create_project(
        client, owner, default_target_model_id=target["id"], default_judge_model_id=judge["id"]
    )
    url = f"{PROJECTS}/{project['id']}"
    cleared = await client.patch(url, json={"default_target_model_id": None}, headers=owner.headers)
    assert cleared.json()["default_target_model_id"] is None

    deleted = await client.delete(f"/api/v1/models/{judge['id']}", headers=owner.headers)
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(url, headers=owner.headers)).json()["default_judge_model_id"] is None


async def test_viewer_reads_but_cannot_write(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    project = await create_project(client, owner)
    url = f"{PROJECTS}/{project['id']}"

    assert (await client.get(url, headers=viewer.headers)).status_code == 200
    assert (await client.get(PROJECTS, headers=viewer.headers)).json()["total"] == 1
    for response in (
        await client.post(PROJECTS, json={"name": "Mine"}, headers=viewer.headers),
        await client.patch(url, json={"name": "Renamed"}, headers=viewer.headers),
        await client.delete(url, headers=viewer.headers),
    ):
        assert_problem(response, 403)
    assert (await client.get(url, headers=owner.headers)).json()["name"] == project["name"]


async def test_member_can_write(client):
    owner = await register(client)
    member = await add_member(client, owner, "member")
    project = await create_project(client, member)
    assert (
        await client.get(f"{PROJECTS}/{project['id']}", headers=owner.headers)
    ).status_code == 200


async def test_another_organizations_project_is_not_found(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    url = f"{PROJECTS}/{project['id']}"

    for response in (
        await client.get(url, headers=stranger.headers),
        await client.patch(url, json={"name": "Mine now"}, headers=stranger.headers),
        await client.delete(url, headers=stranger.headers),
    ):
        assert_problem(response, 404)
    assert (await client.get(PROJECTS, headers=stranger.headers)).json()["total"] == 0
    assert (await client.get(url, headers=owner.headers)).json()["name"] == project["name"]


async def test_unknown_id_is_404_and_malformed_id_is_422(client):
    owner = await register(client)
    assert_problem(await client.get(f"{PROJECTS}/{uuid.uuid4()}", headers=owner.headers), 404)
    assert_problem(
        await client.get(f"{PROJECTS}/not-a-uuid", headers=owner.headers), 422, field="project_id"
    )


async def test_anonymous_is_401(client):
    assert_problem(await client.get(PROJECTS), 401)
    assert_problem(await client.post(PROJECTS, json={"name": "P"}), 401)
