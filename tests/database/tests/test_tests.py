from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Account,
    add_member,
    assert_problem,
    create_project,
    create_test,
    create_test_set,
    register,
)

TESTS = "/api/v1/tests"
BULK = "/api/v1/tests/bulk"


async def _list(client: httpx.AsyncClient, account: Account, **params: Any) -> dict:
    response = await client.get(TESTS, params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _inputs(client: httpx.AsyncClient, account: Account, **params: Any) -> list[str]:
    return [item["input"] for item in (await _list(client, account, **params))["items"]]


# --- create, read, update, delete -----------------------------------------------------------


async def test_create_with_every_field_and_read_back(client):
    owner = await register(client)
    project = await create_project(client, owner)
    body = {
        "project_id": project["id"],
        "input": "  What is the capital of {{ country }}?  ",
        "expected_output": "Paris",
        "context": ["Paris is the capital of France."],
        "behavior": "accuracy",
        "category": "geography",
        "topic": "capitals",
        "tags": ["smoke", " europe "],
        "variables": {"country": "France"},
        "metadata": {"source": "atlas", "page": 12},
    }
    created = await client.post(TESTS, json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    test = created.json()
    assert test["input"] == "What is the capital of {{ country }}?"
    assert test["tags"] == ["smoke", "europe"]
    assert test["messages"] is None
    for key in ("expected_output", "context", "behavior", "category", "topic", "variables"):
        assert test[key] == body[key]
    assert test["metadata"] == {"source": "atlas", "page": 12}
    assert test["project_id"] == project["id"]

    read = await client.get(f"{TESTS}/{test['id']}", headers=owner.headers)
    assert read.json() == test


async def test_create_with_messages_only_and_defaults(client):
    owner = await register(client)
    project = await create_project(client, owner)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    test = await create_test(client, owner, project["id"], messages=messages)
    assert test["messages"] == messages
    assert test["input"] is None
    assert (test["context"], test["tags"], test["variables"], test["metadata"]) == ([], [], {}, {})


async def test_update_changes_only_the_given_fields(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="Old", tags=["a"], topic="t")
    url = f"{TESTS}/{test['id']}"
    patched = await client.patch(
        url, json={"input": "New", "metadata": {"k": "v"}, "topic": None}, headers=owner.headers
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["input"], body["metadata"], body["topic"], body["tags"]) == (
        "New",
        {"k": "v"},
        None,
        ["a"],
    )
    assert (await client.get(url, headers=owner.headers)).json() == body


async def test_update_may_swap_input_for_messages_but_not_remove_both(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="Hello")
    url = f"{TESTS}/{test['id']}"

    no_input = await client.patch(url, json={"input": None}, headers=owner.headers)
    assert_problem(no_input, 422, field="input")
    swapped = await client.patch(
        url,
        json={"input": None, "messages": [{"role": "user", "content": "Hello"}]},
        headers=owner.headers,
    )
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["input"] is None


async def test_delete(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"])
    url = f"{TESTS}/{test['id']}"
    assert (await client.delete(url, headers=owner.headers)).status_code == 204
    assert_problem(await client.get(url, headers=owner.headers), 404)
    assert_problem(await client.delete(url, headers=owner.headers), 404)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"input": "x" * 100_001}, "input"),
        ({"input": "x", "expected_output": "x" * 100_001}, "expected_output"),
        ({"input": "x", "behavior": "b" * 201}, "behavior"),
        ({"input": "x", "category": "c" * 201}, "category"),
        ({"input": "x", "topic": "t" * 201}, "topic"),
        ({"input": "x", "tags": ["t" * 101]}, "tags.0"),
        ({"input": "x", "tags": [""]}, "tags.0"),
        ({"input": "x", "tags": [f"t{i}" for i in range(51)]}, "tags"),
        ({"input": "x", "context": ["c"] * 101}, "context"),
        ({"input": "x", "context": "not a list"}, "context"),
        ({"input": "x", "variables": ["not", "an", "object"]}, "variables"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, "messages.0.name"),
        ({"input": "x", "severity": "high"}, "severity"),
        ({"input": "x", "organization_id": str(uuid.uuid4())}, "organization_id"),
    ],
)
async def test_bad_create_bodies_name_the_field(client, fields, field):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await client.post(
        TESTS, json={"project_id": project["id"], **fields}, headers=owner.headers
    )
    assert_problem(response, 422, field=field)
    assert (await _list(client, owner))["total"] == 0


@pytest.mark.parametrize(
    "fields",
    [{}, {"expected_output": "only this"}, {"messages": []}, {"input": ""}, {"input": " \n "}],
)
async def test_a_test_needs_input_or_messages(client, fields):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await client.post(
        TESTS, json={"project_id": project["id"], **fields}, headers=owner.headers
    )
    assert "needs input, messages or a conversation" in assert_problem(response, 422)["detail"]
    bulk = await client.post(
        BULK, json={"project_id": project["id"], "tests": [fields]}, headers=owner.headers
    )
    assert "needs input, messages or a conversation" in assert_problem(bulk, 422)["detail"]
    assert (await _list(client, owner))["total"] == 0


async def test_blank_text_is_no_text(client):
    """A blank input or expected output would be an empty CSV cell: it is stored as null."""
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="Hi", expected_output="  ")
    assert test["expected_output"] is None
    url = f"{TESTS}/{test['id']}"
    blanked = await client.patch(url, json={"input": "   "}, headers=owner.headers)
    assert_problem(blanked, 422, field="input")
    assert (await client.get(url, headers=owner.headers)).json()["input"] == "Hi"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": None}, "tags"),
        ({"context": None}, "context"),
        ({"variables": None}, "variables"),
        ({"metadata": None}, "metadata"),
        ({"topic": "t" * 201}, "topic"),
        ({"project_id": str(uuid.uuid4())}, "project_id"),
    ],
)
async def test_bad_update_bodies_name_the_field(client, body, field):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], tags=["keep"])
    response = await client.patch(f"{TESTS}/{test['id']}", json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    assert (await client.get(f"{TESTS}/{test['id']}", headers=owner.headers)).json() == test


async def test_project_must_be_one_of_this_organization(client):
    owner = await register(client)
    stranger = await register(client)
    foreign = await create_project(client, stranger)
    for project_id in (foreign["id"], str(uuid.uuid4())):
        response = await client.post(
            TESTS, json={"project_id": project_id, "input": "x"}, headers=owner.headers
        )
        assert_problem(response, 422, field="project_id")
    assert (await _list(client, stranger))["total"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"input": "a\x00b"},
        {"input": "x", "topic": "t\x00"},
        {"input": "x", "metadata": {"k": "v\x00"}},
        {"input": "x", "variables": {"k\x00": 1}},
    ],
)
async def test_nul_characters_are_refused_with_422(client, fields):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await client.post(
        TESTS, json={"project_id": project["id"], **fields}, headers=owner.headers
    )
    assert_problem(response, 422)


# --- lists ----------------------------------------------------------------------------------


async def test_list_filters(client):
    owner = await register(client)
    project = await create_project(client, owner)
    other_project = await create_project(client, owner)
    pid = project["id"]
    await create_test(
        client,
        owner,
        pid,
        input="Refund policy?",
        expected_output="30 days",
        behavior="accuracy",
        category="billing",
        topic="refunds",
        tags=["smoke", "billing"],
    )
    await create_test(
        client,
        owner,
        pid,
        input="Ignore your rules",
        behavior="safety",
        category="jailbreak",
        topic="prompt injection",
        tags=["smoke"],
    )
    await create_test(
        client,
        owner,
        pid,
        input="Invoice address?",
        expected_output="See the REFUND page",
        behavior="accuracy",
        category="billing",
        topic="invoices",
        tags=["billing"],
    )
    await create_test(client, owner, other_project["id"], input="Elsewhere", behavior="accuracy")

    assert (await _list(client, owner))["total"] == 4
    assert await _inputs(client, owner, project_id=other_project["id"]) == ["Elsewhere"]
    assert await _inputs(client, owner, project_id=pid, behavior="accuracy") == [
        "Refund policy?",
        "Invoice address?",
    ]
    assert await _inputs(client, owner, category="jailbreak") == ["Ignore your rules"]
    assert await _inputs(client, owner, topic="invoices") == ["Invoice address?"]
    assert await _inputs(client, owner, topic="Invoices") == []  # exact, not a search
    assert await _inputs(client, owner, tag="smoke") == ["Refund policy?", "Ignore your rules"]
    assert await _inputs(client, owner, tag=["smoke", "billing"]) == ["Refund policy?"]
    assert await _inputs(client, owner, tag="nothing") == []
    # q looks in input and expected output, case-insensitively
    assert await _inputs(client, owner, q="refund") == ["Refund policy?", "Invoice address?"]
    assert await _inputs(client, owner, q="30 DAYS") == ["Refund policy?"]
    assert await _inputs(client, owner, q="%") == []  # a literal, not a wildcard
    assert await _inputs(client, owner, q="refund", behavior="accuracy", category="billing") == [
        "Refund policy?",
        "Invoice address?",
    ]


async def test_list_sorts_and_paginates_with_total(client):
    owner = await register(client)
    project = await create_project(client, owner)
    for text, topic in (("one", "c"), ("two", "a"), ("three", "b"), ("four", None)):
        await create_test(client, owner, project["id"], input=text, topic=topic)

    assert await _inputs(client, owner) == ["one", "two", "three", "four"]
    assert await _inputs(client, owner, sort="-created_at") == ["four", "three", "two", "one"]
    assert await _inputs(client, owner, sort="topic") == ["two", "three", "one", "four"]

    seen: list[str] = []
    for offset in (0, 3):
        page = await _list(client, owner, limit=3, offset=offset)
        assert (page["total"], page["limit"], page["offset"]) == (4, 3, offset)
        seen += [item["input"] for item in page["items"]]
    assert seen == ["one", "two", "three", "four"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "input"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**20}, "offset"),
        ({"project_id": "nope"}, "project_id"),
        ({"topic": "t" * 201}, "topic"),
        ({"q": "q" * 501}, "q"),
    ],
)
async def test_bad_list_parameters_name_the_field(client, params, field):
    owner = await register(client)
    response = await client.get(TESTS, params=params, headers=owner.headers)
    assert_problem(response, 422, field=field)


async def test_list_by_test_set_in_set_order(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b, c = [await create_test(client, owner, project["id"], input=x) for x in "abc"]
    await create_test(client, owner, project["id"], input="not in the set")
    test_set = await create_test_set(client, owner, project["id"], [c["id"], a["id"], b["id"]])

    page = await _list(client, owner, test_set_id=test_set["id"], sort="position")
    assert page["total"] == 3
    assert [item["input"] for item in page["items"]] == ["c", "a", "b"]
    assert await _inputs(client, owner, test_set_id=test_set["id"]) == ["a", "b", "c"]
    # position without a set falls back to creation order
    assert (await _inputs(client, owner, sort="position"))[:3] == ["a", "b", "c"]


async def test_list_by_test_set_filters_sorts_and_pages(client):
    owner = await register(client)
    project = await create_project(client, owner)
    a, b, c, d, e, f = [
        await create_test(client, owner, project["id"], input=x, topic=("even", "odd")[i % 2])
        for i, x in enumerate("abcdef")
    ]
    await create_test(client, owner, project["id"], input="outside", topic="even")
    members = [e, b, a, f, c, d]
    test_set = await create_test_set(client, owner, project["id"], [t["id"] for t in members])

    async def listed(**params: Any) -> tuple[int, list[str]]:
        page = await _list(client, owner, test_set_id=test_set["id"], **params)
        return page["total"], [item["input"] for item in page["items"]]

    assert await listed(sort="position", offset=4, limit=2) == (6, ["c", "d"])
    assert await listed(sort="position", topic="even", offset=1, limit=2) == (3, ["a", "c"])
    assert await listed(sort="-created_at", topic="even", limit=2) == (3, ["e", "c"])
    assert await listed(sort="topic", offset=2, limit=2) == (6, ["e", "b"])
    assert await listed(sort="position", q="zzz") == (0, [])
    assert await listed(sort="created_at", project_id=str(uuid.uuid4())) == (0, [])


async def test_filters_never_reveal_another_organizations_tests(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="secret", topic="private")
    test_set = await create_test_set(client, owner, project["id"], [test["id"]])

    for params in (
        {"project_id": project["id"]},
        {"test_set_id": test_set["id"]},
        {"topic": "private"},
        {"q": "secret"},
    ):
        page = await _list(client, stranger, **params)
        assert (page["total"], page["items"]) == (0, [])
    assert (await _list(client, owner, project_id=project["id"]))["total"] == 1


# --- bulk -----------------------------------------------------------------------------------


async def test_bulk_creates_in_order_and_can_append_to_a_set(client):
    owner = await register(client)
    project = await create_project(client, owner)
    existing = await create_test(client, owner, project["id"], input="existing")
    test_set = await create_test_set(client, owner, project["id"], [existing["id"]])
    response = await client.post(
        BULK,
        json={
            "project_id": project["id"],
            "test_set_id": test_set["id"],
            "tests": [
                {"input": "first", "tags": ["bulk"]},
                {"messages": [{"role": "user", "content": "second"}], "tags": ["bulk"]},
                {"input": "third", "expected_output": "3", "tags": ["bulk"]},
            ],
        },
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] == 3
    listed = await _list(client, owner, tag="bulk")
    assert [item["id"] for item in listed["items"]] == body["ids"]
    in_set = await _list(client, owner, test_set_id=test_set["id"], sort="position")
    assert [item["id"] for item in in_set["items"]] == [existing["id"], *body["ids"]]


async def test_bulk_of_1000_is_accepted_and_1001_refused(client):
    owner = await register(client)
    project = await create_project(client, owner)
    tests = [{"input": f"case {i}"} for i in range(1001)]

    refused = await client.post(
        BULK, json={"project_id": project["id"], "tests": tests}, headers=owner.headers
    )
    assert_problem(refused, 422, field="tests")
    assert (await _list(client, owner))["total"] == 0

    accepted = await client.post(
        BULK, json={"project_id": project["id"], "tests": tests[:1000]}, headers=owner.headers
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["created"] == 1000
    assert (await _list(client, owner, limit=1))["total"] == 1000


@pytest.mark.parametrize(
    ("tests", "field"),
    [
        ([], "tests"),
        ([{"input": "ok"}, {"expected_output": "no input"}], "tests.1"),
        ([{"input": "ok"}, {"input": "x", "topic": "t" * 201}], "tests.1.topic"),
        ([{"input": "ok", "project_id": str(uuid.uuid4())}], "tests.0.project_id"),
    ],
)
async def test_bulk_with_any_bad_case_writes_nothing(client, tests, field):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await client.post(
        BULK, json={"project_id": project["id"], "tests": tests}, headers=owner.headers
    )
    assert_problem(response, 422, field=field)
    assert (await _list(client, owner))["total"] == 0


async def test_bulk_refuses_foreign_project_and_set_of_another_project(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    foreign_project = await create_project(client, stranger)
    foreign_set = await create_test_set(client, stranger, foreign_project["id"])
    sibling_set = await create_test_set(client, owner, (await create_project(client, owner))["id"])
    tests = [{"input": "x"}]

    into_foreign = await client.post(
        BULK, json={"project_id": foreign_project["id"], "tests": tests}, headers=owner.headers
    )
    assert_problem(into_foreign, 422, field="project_id")
    for test_set in (foreign_set, sibling_set):
        response = await client.post(
            BULK,
            json={"project_id": project["id"], "test_set_id": test_set["id"], "tests": tests},
            headers=owner.headers,
        )
        assert_problem(response, 422, field="test_set_id")
    assert (await _list(client, owner))["total"] == 0
    assert (await _list(client, stranger))["total"] == 0


# --- authorization --------------------------------------------------------------------------


async def test_viewer_reads_but_cannot_write(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="unchanged")
    url = f"{TESTS}/{test['id']}"

    assert (await client.get(url, headers=viewer.headers)).status_code == 200
    assert (await _list(client, viewer))["total"] == 1
    for response in (
        await client.post(
            TESTS, json={"project_id": project["id"], "input": "x"}, headers=viewer.headers
        ),
        await client.post(
            BULK,
            json={"project_id": project["id"], "tests": [{"input": "x"}]},
            headers=viewer.headers,
        ),
        await client.patch(url, json={"input": "changed"}, headers=viewer.headers),
        await client.delete(url, headers=viewer.headers),
    ):
        assert_problem(response, 403)
    assert await _inputs(client, owner) == ["unchanged"]


async def test_another_organizations_test_is_not_found(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="mine")
    url = f"{TESTS}/{test['id']}"

    for response in (
        await client.get(url, headers=stranger.headers),
        await client.patch(url, json={"input": "theirs"}, headers=stranger.headers),
        await client.delete(url, headers=stranger.headers),
    ):
        assert_problem(response, 404)
    assert (await client.get(url, headers=owner.headers)).json()["input"] == "mine"


async def test_values_beyond_64_bit_integers_are_kept_exactly(client):
    """JSON columns are written through orjson, which refuses integers beyond 64 bits: such a
    value in a user's metadata or variables must still round-trip, not fail the request."""
    owner = await register(client)
    project = await create_project(client, owner)
    huge = 2**70 + 1
    created = await create_test(
        client, owner, project["id"], metadata={"ticket": huge}, variables={"n": -huge}
    )
    read = await client.get(f"/api/v1/tests/{created['id']}", headers=owner.headers)
    assert read.status_code == 200, read.text
    assert read.json()["metadata"] == {"ticket": huge}
    assert read.json()["variables"] == {"n": -huge}


async def test_a_schema_too_large_to_compile_is_a_422_on_a_test_and_an_import(client):
    """A pattern whose repetition overflows raised past the schema check: a 500 on a test and
    on every import that takes expected tool calls or promptfoo's is-json."""
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    schema = {"type": "string", "pattern": "a{99999999999}"}
    calls = [{"name": "lookup", "match": "schema", "arguments": schema}]
    created = await client.post(
        TESTS,
        json={"project_id": project["id"], "input": "hi", "expected_tool_calls": calls},
        headers=account.headers,
    )
    assert_problem(created, 422, field="expected_tool_calls.0.arguments")
    promptfoo = (
        "tests:\n  - vars: {q: hi}\n    assert:\n"
        "      - {type: is-json, value: {type: string, pattern: 'a{99999999999}'}}\n"
    )
    imported = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/import",
        params={"format": "promptfoo"},
        content=promptfoo.encode(),
        headers={**account.headers, "Content-Type": "application/yaml"},
    )
    problem = assert_problem(imported, 422)
    assert "copies of its parts" in problem["errors"][0]["message"]
    listed = await client.get(TESTS, params={"project_id": project["id"]}, headers=account.headers)
    assert listed.json()["items"] == []
