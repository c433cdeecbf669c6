"""Through the API: a template that can never render is refused on save naming its field and
line; variables the template sets itself are not asked for; the preview renders the system
prompt as a run does (the input as given, the messages) and names it when it fails."""

from __future__ import annotations

import httpx
import pytest

from tests.database.prompts.test_prompts import PROMPTS, new_project, new_prompt
from tests.helpers import Account, assert_problem, register


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client, name="Preview Owner")


@pytest.fixture
async def project_id(client: httpx.AsyncClient, owner: Account) -> str:
    return await new_project(client, owner)


@pytest.mark.parametrize("field", ["template", "system_prompt"])
@pytest.mark.parametrize("source", ["{% include 'a' %}", "{% if x %}{{ x|nosuch }}{% endif %}"])
async def test_a_template_that_never_renders_is_refused_on_save(
    client, owner, project_id, field, source
):
    body = {
        "project_id": project_id,
        "name": "Never",
        "template": "fine",
        field: "Hello\n" + source,
    }
    response = await client.post(PROMPTS, json=body, headers=owner.headers)
    problem = assert_problem(response, 422, field=field)
    assert [error["line"] for error in problem["errors"]] == [2]


async def test_a_variable_the_template_sets_is_not_asked_for(client, owner, project_id):
    template = (
        '{% if formal %}{% set greeting = "Dear" %}{% else %}{% set greeting = "Hi" %}{% endif %}'
        "{{ greeting }} {{ name }}"
    )
    prompt = await new_prompt(client, owner, project_id, template=template)
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render",
        json={"variables": {"formal": True, "name": "Ann"}},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "Dear Ann"


async def test_the_system_prompt_is_previewed_with_the_input_as_given_and_the_messages(
    client, owner, project_id
):
    prompt = await new_prompt(
        client,
        owner,
        project_id,
        template="Answer briefly: {{ input }}",
        system_prompt="The user asked: {{ input }} ({{ messages|length }} earlier)",
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render",
        json={"variables": {"input": "hi"}},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["system_prompt"] == "The user asked: hi (0 earlier)"
    assert response.json()["text"] == "Answer briefly: hi"


async def test_a_system_prompt_failing_to_render_is_named(client, owner, project_id):
    prompt = await new_prompt(
        client, owner, project_id, template="{{ name }}", system_prompt="{{ 1/0 }}"
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render", json={"variables": {"name": "x"}}, headers=owner.headers
    )
    problem = assert_problem(response, 422, field="system_prompt")
    assert problem["detail"] == "system prompt failed to render: division by zero"
    assert [error["field"] for error in problem["errors"]] == ["system_prompt"]
