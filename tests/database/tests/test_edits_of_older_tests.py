"""An edit judges what it sends: a test stored before a limit it breaks stays editable, a field
sent over its limit is refused by name, and an edit leaving the test no input says so in plain
words, naming input and any other field it emptied."""

from __future__ import annotations

from sqlalchemy import update

from database.tests.models import TestCase
from database.tests.schemas import MAX_FREE_FORM_KEYS, NEEDS_INPUT
from tests.helpers import assert_problem, create_project, create_test, register, tenant_session

TESTS = "/api/v1/tests"
WIDE = {f"k{i}": "x" for i in range(MAX_FREE_FORM_KEYS * 2)}


async def _stored_before_the_limits(client, database):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="q")
    async with tenant_session(database, owner.organization_id) as session:
        await session.execute(update(TestCase).where(TestCase.id == test["id"]).values(meta=WIDE))
    return owner, f"{TESTS}/{test['id']}"


async def test_a_test_stored_before_the_limits_takes_an_edit_of_other_fields(client, database):
    owner, url = await _stored_before_the_limits(client, database)
    edited = await client.patch(url, json={"tags": ["smoke"]}, headers=owner.headers)
    assert edited.status_code == 200, edited.text
    assert edited.json()["tags"] == ["smoke"]
    assert edited.json()["metadata"] == WIDE


async def test_a_field_sent_over_its_limit_is_still_refused_by_name(client, database):
    owner, url = await _stored_before_the_limits(client, database)
    refused = await client.patch(url, json={"metadata": WIDE}, headers=owner.headers)
    assert_problem(refused, 422, field="body.metadata")
    too_many = await client.patch(
        url, json={"tags": [f"t{i}" for i in range(51)]}, headers=owner.headers
    )
    assert_problem(too_many, 422, field="body.tags")


async def test_an_edit_leaving_no_input_names_input_in_plain_words(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test = await create_test(client, owner, project["id"], input="q")
    refused = await client.patch(
        f"{TESTS}/{test['id']}", json={"input": None}, headers=owner.headers
    )
    body = assert_problem(refused, 422)
    assert body["errors"] == [{"field": "body.input", "message": NEEDS_INPUT}]
    assert NEEDS_INPUT in body["detail"]
    assert "input_value" not in refused.text and "pydantic" not in refused.text


async def test_an_edit_emptying_the_chat_names_messages_besides_input(client):
    owner = await register(client)
    project = await create_project(client, owner)
    chat = [{"role": "user", "content": "Hello"}]
    created = await client.post(
        TESTS, json={"project_id": project["id"], "messages": chat}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    url = f"{TESTS}/{created.json()['id']}"
    refused = await client.patch(url, json={"messages": []}, headers=owner.headers)
    assert assert_problem(refused, 422)["errors"] == [
        {"field": "body.input", "message": NEEDS_INPUT},
        {"field": "body.messages", "message": NEEDS_INPUT},
    ]
    assert (await client.get(url, headers=owner.headers)).json()["messages"] == chat
