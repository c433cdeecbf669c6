from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text

from tests.app.contract import as_documented
from tests.helpers import (
    Account,
    add_member,
    assert_problem,
    create_project,
    create_test,
    create_test_set,
    register,
    tenant_session,
    until_waiting_for_locks,
)

SETS = "/api/v1/test-sets"


async def _order(client: httpx.AsyncClient, account: Account, test_set_id: str) -> list[str]:
    """The set's test ids in set order."""
    response = await client.get(
        "/api/v1/tests",
        params={"test_set_id": test_set_id, "sort": "position", "limit": 200},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def _set(client: httpx.AsyncClient, account: Account, test_set_id: str) -> dict:
    response = await client.get(f"{SETS}/{test_set_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _tests(client: httpx.AsyncClient, account: Account, project_id: str, n: int) -> list[str]:
    return [(await create_test(client, account, project_id))["id"] for _ in range(n)]


# --- CRUD -----------------------------------------------------------------------------------


async def test_create_read_update_delete(client):
    owner = await register(client)
    project = await create_project(client, owner)
    b, a = await _tests(client, owner, project["id"], 2)
    created = await client.post(
        SETS,
        json={
            "project_id": project["id"],
            "name": " Regression ",
            "description": "Nightly",
            "test_ids": [a, b],
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    test_set = created.json()
    assert (test_set["name"], test_set["description"]) == ("Regression", "Nightly")
    assert (test_set["test_count"], test_set["latest_version"]) == (2, None)
    assert test_set["project_id"] == project["id"]
    assert await _order(client, owner, test_set["id"]) == [a, b]
    assert await _set(client, owner, test_set["id"]) == test_set

    url = f"{SETS}/{test_set['id']}"
    patched = await client.patch(url, json={"name": "Renamed"}, headers=owner.headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["description"]) == ("Renamed", "Nightly")
    assert patched.json()["test_count"] == 2

    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    # the tests themselves survive
    kept = await client.get(f"/api/v1/tests/{a}", headers=owner.headers)
    assert kept.status_code == 200


async def test_list_by_project_with_counts_and_total(client):
    owner = await register(client)
    project = await create_project(client, owner)
    other = await create_project(client, owner)
    tests = await _tests(client, owner, project["id"], 3)
    first = await create_test_set(client, owner, project["id"], tests)
    second = await create_test_set(client, owner, project["id"], tests[:1])
    await create_test_set(client, owner, other["id"])

    everything = await client.get(SETS, headers=owner.headers)
    assert everything.json()["total"] == 3
    page = (
        await client.get(SETS, params={"project_id": project["id"]}, headers=owner.headers)
    ).json()
    assert page["total"] == 2
    assert [(s["id"], s["test_count"]) for s in page["items"]] == [
        (first["id"], 3),
        (second["id"], 1),
    ]
    limited = (
        await client.get(SETS, params={"limit": 1, "offset": 1}, headers=owner.headers)
    ).json()
    assert (limited["total"], [s["id"] for s in limited["items"]]) == (3, [second["id"]])


async def test_names_are_unique_per_project(client):
    owner = await register(client)
    project = await create_project(client, owner)
    other = await create_project(client, owner)
    await create_test_set(client, owner, project["id"], name="Smoke")
    duplicate = await client.post(
        SETS, json={"project_id": project["id"], "name": "Smoke"}, headers=owner.headers
    )
    assert "already exists" in assert_problem(duplicate, 409)["detail"]
    await create_test_set(client, owner, other["id"], name="Smoke")  # another project may

    second = await create_test_set(client, owner, project["id"], name="Second")
    renamed = await client.patch(
        f"{SETS}/{second['id']}", json={"name": "Smoke"}, headers=owner.headers
    )
    assert_problem(renamed, 409)
    assert (await _set(client, owner, second["id"]))["name"] == "Second"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "S"}, "project_id"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "S", "description": "d" * 10_001}, "description"),
        ({"name": "S", "test_ids": ["not-a-uuid"]}, "test_ids.0"),
        ({"name": "S", "tests": []}, "tests"),
    ],
)
async def test_bad_create_bodies_name_the_field(client, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    if field != "project_id":
        body = {"project_id": project["id"], **body}
    response = await client.post(SETS, json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    assert (await client.get(SETS, headers=owner.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": None}, "name"), ({"name": "x" * 201}, "name"), ({"project_id": None}, "project_id")],
)
async def test_bad_update_bodies_name_the_field(client, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    response = await client.patch(f"{SETS}/{test_set['id']}", json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)


async def test_create_refuses_tests_it_cannot_take(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    mine = (await create_test(client, owner, project["id"]))["id"]
    sibling = (await create_test(client, owner, (await create_project(client, owner))["id"]))["id"]
    foreign_project = await create_project(client, stranger)
    foreign = (await create_test(client, stranger, foreign_project["id"]))["id"]

    for test_ids in ([mine, foreign], [mine, sibling], [mine, str(uuid.uuid4())], [mine, mine]):
        response = await client.post(
            SETS,
            json={"project_id": project["id"], "name": "S", "test_ids": test_ids},
            headers=owner.headers,
        )
        assert_problem(response, 422, field="test_ids")
    listed = await client.get(SETS, headers=owner.headers)
    assert listed.json()["total"] == 0  # not even the set itself was written

    in_foreign_project = await client.post(
        SETS, json={"project_id": foreign_project["id"], "name": "S"}, headers=owner.headers
    )
    assert_problem(in_foreign_project, 422, field="project_id")


async def test_foreign_test_ids_are_named_in_the_errors(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    foreign = (await create_test(client, stranger, (await create_project(client, stranger))["id"]))[
        "id"
    ]
    response = await client.post(
        SETS,
        json={"project_id": project["id"], "name": "S", "test_ids": [foreign]},
        headers=owner.headers,
    )
    body = assert_problem(response, 422, field="test_ids")
    assert [error["value"] for error in body["errors"]] == [foreign]


# --- membership -----------------------------------------------------------------------------


async def test_add_appends_in_order_and_skips_present_tests(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b, c, d = await _tests(client, owner, project["id"], 4)
    test_set = await create_test_set(client, owner, project["id"], [b])
    url = f"{SETS}/{test_set['id']}/tests"

    added = await client.post(url, json={"test_ids": [d, b, a, d]}, headers=owner.headers)
    assert added.status_code == 200, added.text
    assert added.json() == {"test_count": 3, "added": 2}
    again = await client.post(url, json={"test_ids": [c]}, headers=owner.headers)
    assert again.json() == {"test_count": 4, "added": 1}
    assert await _order(client, owner, test_set["id"]) == [b, d, a, c]
    assert (await _set(client, owner, test_set["id"]))["test_count"] == 4


async def test_replace_sets_membership_and_order(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b, c = await _tests(client, owner, project["id"], 3)
    test_set = await create_test_set(client, owner, project["id"], [a, b, c])
    url = f"{SETS}/{test_set['id']}/tests"

    replaced = await client.put(url, json={"test_ids": [c, a]}, headers=owner.headers)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["test_count"] == 2
    assert await _order(client, owner, test_set["id"]) == [c, a]
    assert replaced.json()["added"] == 0  # both were in it (it said 2)
    again = await client.put(url, json={"test_ids": [b, c]}, headers=owner.headers)
    assert again.json() == {"test_count": 2, "added": 1}

    emptied = await client.put(url, json={"test_ids": []}, headers=owner.headers)
    assert emptied.json()["test_count"] == 0
    assert await _order(client, owner, test_set["id"]) == []


async def test_remove_a_test_from_the_set(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b, c = await _tests(client, owner, project["id"], 3)
    test_set = await create_test_set(client, owner, project["id"], [a, b, c])
    url = f"{SETS}/{test_set['id']}/tests"

    assert (await client.delete(f"{url}/{b}", headers=owner.headers)).status_code == 204
    assert await _order(client, owner, test_set["id"]) == [a, c]
    assert_problem(await client.delete(f"{url}/{b}", headers=owner.headers), 404)
    # removed from the set, not deleted
    assert (await client.get(f"/api/v1/tests/{b}", headers=owner.headers)).status_code == 200
    # appended again, it goes to the end
    await client.post(url, json={"test_ids": [b]}, headers=owner.headers)
    assert await _order(client, owner, test_set["id"]) == [a, c, b]


async def test_a_test_may_be_in_many_sets_and_deleting_it_leaves_them_all(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b = await _tests(client, owner, project["id"], 2)
    first = await create_test_set(client, owner, project["id"], [a, b])
    second = await create_test_set(client, owner, project["id"], [b, a])
    assert await _order(client, owner, second["id"]) == [b, a]

    assert (await client.delete(f"/api/v1/tests/{a}", headers=owner.headers)).status_code == 204
    assert await _order(client, owner, first["id"]) == [b]
    assert (await _set(client, owner, second["id"]))["test_count"] == 1


@pytest.mark.parametrize("method", ["post", "put"])
async def test_membership_refuses_tests_it_cannot_take(client, method):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    mine = (await create_test(client, owner, project["id"]))["id"]
    test_set = await create_test_set(client, owner, project["id"], [mine])
    foreign = (await create_test(client, stranger, (await create_project(client, stranger))["id"]))[
        "id"
    ]
    sibling = (await create_test(client, owner, (await create_project(client, owner))["id"]))["id"]
    url = f"{SETS}/{test_set['id']}/tests"

    for test_ids in ([foreign], [sibling], [str(uuid.uuid4())]):
        response = await client.request(
            method, url, json={"test_ids": test_ids}, headers=owner.headers
        )
        body = assert_problem(response, 422, field="test_ids")
        assert test_ids[0] in body["detail"]
    assert await _order(client, owner, test_set["id"]) == [mine]


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("post", {"test_ids": []}, "test_ids"),
        ("post", {}, "test_ids"),
        ("put", {"test_ids": ["x"]}, "test_ids.0"),
        ("put", {"test_ids": [], "mode": "append"}, "mode"),
    ],
)
async def test_bad_membership_bodies_name_the_field(client, method, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    response = await client.request(
        method, f"{SETS}/{test_set['id']}/tests", json=body, headers=owner.headers
    )
    assert_problem(response, 422, field=field)


async def test_replace_with_a_repeated_test_is_refused(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b = await _tests(client, owner, project["id"], 2)
    test_set = await create_test_set(client, owner, project["id"], [a, b])
    response = await client.put(
        f"{SETS}/{test_set['id']}/tests", json={"test_ids": [a, a]}, headers=owner.headers
    )
    assert_problem(response, 422, field="test_ids")
    assert await _order(client, owner, test_set["id"]) == [a, b]


# --- versions -------------------------------------------------------------------------------


async def _publish(
    client: httpx.AsyncClient, account: Account, test_set_id: str, status: int, **body: object
) -> dict:
    response = await client.post(
        f"{SETS}/{test_set_id}/versions", json=body or None, headers=account.headers
    )
    assert response.status_code == status, response.text
    return response.json()


async def _version_cases(
    client: httpx.AsyncClient, account: Account, test_set_id: str, number: int
) -> list[dict]:
    response = await client.get(
        f"{SETS}/{test_set_id}/versions/{number}/cases", headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_publish_snapshots_and_an_unchanged_set_returns_the_latest(app, client):
    owner = await register(client)
    project = await create_project(client, owner)
    a = await create_test(client, owner, project["id"], input="A", tags=["x"])
    b = await create_test(client, owner, project["id"], input="B", expected_output="b")
    test_set = await create_test_set(client, owner, project["id"], [b["id"], a["id"]])

    first = await _publish(client, owner, test_set["id"], 201, note="first cut")
    assert (first["number"], first["case_count"], first["note"]) == (1, 2, "first cut")
    assert len(first["content_hash"]) == 64
    int(first["content_hash"], 16)
    assert (await _set(client, owner, test_set["id"]))["latest_version"] == 1

    same = await _publish(client, owner, test_set["id"], 200)
    assert same == first
    # Both answers are documented as the version: a generated client reads the 200's too.
    again = await client.post(f"{SETS}/{test_set['id']}/versions", headers=owner.headers)
    assert as_documented(app.openapi(), again) == first

    cases = await _version_cases(client, owner, test_set["id"], 1)
    assert [(c["position"], c["test_id"], c["case"]["input"]) for c in cases] == [
        (0, b["id"], "B"),
        (1, a["id"], "A"),
    ]
    assert cases[0]["case"]["expected_output"] == "b"
    assert cases[1]["case"]["tags"] == ["x"]


@pytest.mark.parametrize("change", ["edit", "reorder", "add", "remove", "delete", "import"])
async def test_any_change_makes_a_new_version(client, change):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b = await _tests(client, owner, project["id"], 2)
    test_set = await create_test_set(client, owner, project["id"], [a, b])
    first = await _publish(client, owner, test_set["id"], 201)
    url = f"{SETS}/{test_set['id']}/tests"

    if change == "edit":
        await client.patch(f"/api/v1/tests/{a}", json={"topic": "new"}, headers=owner.headers)
    elif change == "reorder":
        await client.put(url, json={"test_ids": [b, a]}, headers=owner.headers)
    elif change == "add":
        extra = (await create_test(client, owner, project["id"]))["id"]
        await client.post(url, json={"test_ids": [extra]}, headers=owner.headers)
    elif change == "remove":
        await client.delete(f"{url}/{b}", headers=owner.headers)
    elif change == "delete":  # the test itself: its membership goes with it
        await client.delete(f"/api/v1/tests/{b}", headers=owner.headers)
    else:
        imported = await client.post(
            f"{SETS}/{test_set['id']}/import",
            content=b'[{"input": "imported"}]',
            params={"format": "json"},
            headers={**owner.headers, "Content-Type": "application/json"},
        )
        assert imported.status_code == 201, imported.text

    second = await _publish(client, owner, test_set["id"], 201)
    assert second["number"] == 2
    assert second["content_hash"] != first["content_hash"]
    assert second["case_count"] == {"add": 3, "import": 3, "remove": 1, "delete": 1}.get(change, 2)
    again = await _publish(client, owner, test_set["id"], 200)
    assert again == second


async def _revisions(database, account: Account, test_set_id: str) -> tuple[int, int | None]:
    async with tenant_session(database, account.organization_id) as session:
        row = await session.execute(
            text("SELECT content_revision, published_revision FROM test_sets WHERE id = :id"),
            {"id": test_set_id},
        )
        return tuple(row.one())


async def test_an_unchanged_set_is_known_current_without_reading_its_cases(client, database):
    """Publishing records the revision its version holds; every change to the set's cases
    (through any path) moves the revision on, and nothing else does."""
    owner = await register(client)
    project = await create_project(client, owner)
    a, b, outsider = await _tests(client, owner, project["id"], 3)
    test_set = await create_test_set(client, owner, project["id"], [a, b])
    other_set = await create_test_set(client, owner, project["id"], [outsider])
    await _publish(client, owner, test_set["id"], 201)
    revision, published = await _revisions(database, owner, test_set["id"])
    assert published == revision

    # Changes elsewhere, and edits of the set itself that are not its cases, keep it current.
    await client.patch(f"/api/v1/tests/{outsider}", json={"topic": "x"}, headers=owner.headers)
    await client.patch(f"{SETS}/{test_set['id']}", json={"name": "renamed"}, headers=owner.headers)
    await _publish(client, owner, other_set["id"], 201)
    assert await _revisions(database, owner, test_set["id"]) == (revision, published)

    # A member's edit moves it on: the next publish reads the cases and makes version 2.
    await client.patch(f"/api/v1/tests/{a}", json={"topic": "y"}, headers=owner.headers)
    moved, _ = await _revisions(database, owner, test_set["id"])
    assert moved > revision
    second = await _publish(client, owner, test_set["id"], 201)
    assert second["number"] == 2
    assert await _revisions(database, owner, test_set["id"]) == (moved, moved)


async def test_editing_or_deleting_a_test_never_rewrites_a_version(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a = await create_test(client, owner, project["id"], input="original", metadata={"v": 1})
    b = await create_test(client, owner, project["id"], input="doomed")
    test_set = await create_test_set(client, owner, project["id"], [a["id"], b["id"]])
    first = await _publish(client, owner, test_set["id"], 201)
    before = await _version_cases(client, owner, test_set["id"], 1)

    edited = await client.patch(
        f"/api/v1/tests/{a['id']}",
        json={"input": "rewritten", "metadata": {"v": 2}},
        headers=owner.headers,
    )
    assert edited.status_code == 200
    deleted = await client.delete(f"/api/v1/tests/{b['id']}", headers=owner.headers)
    assert deleted.status_code == 204

    after = await _version_cases(client, owner, test_set["id"], 1)
    assert [c["case"] for c in after] == [c["case"] for c in before]
    assert after[0]["case"]["input"] == "original"
    assert after[1]["test_id"] is None  # the test is gone, its case is not
    version = await client.get(f"{SETS}/{test_set['id']}/versions/1", headers=owner.headers)
    assert version.json() == first


async def test_versions_are_listed_newest_first_and_read_by_number(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    empty = await _publish(client, owner, test_set["id"], 201)
    assert empty["case_count"] == 0
    for _ in range(2):
        test = await create_test(client, owner, project["id"])
        await client.post(
            f"{SETS}/{test_set['id']}/tests", json={"test_ids": [test["id"]]}, headers=owner.headers
        )
        await _publish(client, owner, test_set["id"], 201)

    listed = await client.get(f"{SETS}/{test_set['id']}/versions", headers=owner.headers)
    body = listed.json()
    assert body["total"] == 3
    assert [(v["number"], v["case_count"]) for v in body["items"]] == [(3, 2), (2, 1), (1, 0)]
    read = await client.get(f"{SETS}/{test_set['id']}/versions/2", headers=owner.headers)
    assert read.json() == body["items"][1]
    assert_problem(
        await client.get(f"{SETS}/{test_set['id']}/versions/4", headers=owner.headers), 404
    )
    assert_problem(
        await client.get(f"{SETS}/{test_set['id']}/versions/4/cases", headers=owner.headers), 404
    )


@pytest.mark.parametrize("number", ["0", "-1", str(2**31), "9" * 30, "latest"])
async def test_bad_version_numbers_are_refused(client, number):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    url = f"{SETS}/{test_set['id']}/versions/{number}"
    for path in (url, f"{url}/cases"):
        assert_problem(await client.get(path, headers=owner.headers), 422, field="number")


async def test_same_cases_give_the_same_hash_in_any_set(client):
    owner = await register(client)
    project = await create_project(client, owner)
    tests = await _tests(client, owner, project["id"], 2)
    first = await create_test_set(client, owner, project["id"], tests)
    second = await create_test_set(client, owner, project["id"], tests)
    one = await _publish(client, owner, first["id"], 201)
    two = await _publish(client, owner, second["id"], 201)
    assert one["content_hash"] == two["content_hash"]


@pytest.mark.parametrize(("body", "field"), [({"note": "n" * 2001}, "note"), ({"x": 1}, "x")])
async def test_bad_publish_bodies_name_the_field(client, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    response = await client.post(
        f"{SETS}/{test_set['id']}/versions", json=body, headers=owner.headers
    )
    assert_problem(response, 422, field=field)
    listed = await client.get(f"{SETS}/{test_set['id']}/versions", headers=owner.headers)
    assert listed.json()["total"] == 0


# --- authorization --------------------------------------------------------------------------


async def test_viewer_reads_but_cannot_write(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    project = await create_project(client, owner)
    a, b = await _tests(client, owner, project["id"], 2)
    test_set = await create_test_set(client, owner, project["id"], [a])
    await _publish(client, owner, test_set["id"], 201)
    url = f"{SETS}/{test_set['id']}"

    for path in (url, f"{url}/versions", f"{url}/versions/1", f"{url}/versions/1/cases"):
        assert (await client.get(path, headers=viewer.headers)).status_code == 200, path
    for response in (
        await client.post(
            SETS, json={"project_id": project["id"], "name": "V"}, headers=viewer.headers
        ),
        await client.patch(url, json={"name": "Renamed"}, headers=viewer.headers),
        await client.delete(url, headers=viewer.headers),
        await client.post(f"{url}/tests", json={"test_ids": [b]}, headers=viewer.headers),
        await client.put(f"{url}/tests", json={"test_ids": []}, headers=viewer.headers),
        await client.delete(f"{url}/tests/{a}", headers=viewer.headers),
        await client.post(f"{url}/versions", headers=viewer.headers),
    ):
        assert_problem(response, 403)
    assert await _order(client, owner, test_set["id"]) == [a]
    assert (await _set(client, owner, test_set["id"]))["name"] == test_set["name"]


async def test_another_organizations_set_is_not_found_everywhere(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    (a,) = await _tests(client, owner, project["id"], 1)
    test_set = await create_test_set(client, owner, project["id"], [a])
    await _publish(client, owner, test_set["id"], 201)
    stranger_project = await create_project(client, stranger)
    theirs = (await create_test(client, stranger, stranger_project["id"]))["id"]
    url = f"{SETS}/{test_set['id']}"

    for response in (
        await client.get(url, headers=stranger.headers),
        await client.patch(url, json={"name": "Mine"}, headers=stranger.headers),
        await client.delete(url, headers=stranger.headers),
        await client.post(f"{url}/tests", json={"test_ids": [theirs]}, headers=stranger.headers),
        await client.put(f"{url}/tests", json={"test_ids": []}, headers=stranger.headers),
        await client.delete(f"{url}/tests/{a}", headers=stranger.headers),
        await client.post(f"{url}/versions", headers=stranger.headers),
        await client.get(f"{url}/versions", headers=stranger.headers),
        await client.get(f"{url}/versions/1", headers=stranger.headers),
        await client.get(f"{url}/versions/1/cases", headers=stranger.headers),
    ):
        assert_problem(response, 404)
    by_project = await client.get(
        SETS, params={"project_id": project["id"]}, headers=stranger.headers
    )
    assert (by_project.json()["total"], by_project.json()["items"]) == (0, [])
    assert await _order(client, owner, test_set["id"]) == [a]
    assert (await _set(client, owner, test_set["id"]))["latest_version"] == 1


async def test_a_test_deleted_while_it_is_added_to_a_set_is_a_422_not_a_500(
    committed_client, committed_owner, committed_database, owner_engine
):
    """The addition waits for the deletion under way, then finds the test gone: an unknown
    test, named, rather than the foreign key's error at the insert."""
    owner, client = committed_owner, committed_client
    project = await create_project(client, owner)
    kept = await create_test(client, owner, project["id"])
    going = await create_test(client, owner, project["id"])
    test_set = await create_test_set(client, owner, project["id"], [kept["id"]])
    async with tenant_session(committed_database, owner.organization_id) as session:
        await session.execute(text("DELETE FROM tests WHERE id = :id"), {"id": going["id"]})
        adding = asyncio.create_task(
            client.post(
                f"/api/v1/test-sets/{test_set['id']}/tests",
                json={"test_ids": [going["id"]]},
                headers=owner.headers,
            )
        )
        await until_waiting_for_locks(owner_engine, 1, adding)
    assert "unknown test" in str(assert_problem(await adding, 422, field="test_ids"))
