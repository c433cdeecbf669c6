"""Prompts through the HTTP API: CRUD, immutable numbered versions, movable labels, sandboxed
rendering, authorization and bad input."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.helpers import Account, add_member, assert_problem, register, tenant_session

PROMPTS = "/api/v1/prompts"


async def new_project(client: httpx.AsyncClient, account: Account, name: str = "Chatbot") -> str:
    response = await client.post("/api/v1/projects", json={"name": name}, headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def new_prompt(
    client: httpx.AsyncClient, account: Account, project_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"project_id": project_id, "name": "Greeter", "template": "Hello {{ name }}!", **fields}
    response = await client.post(PROMPTS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def new_version(
    client: httpx.AsyncClient, account: Account, prompt_id: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{PROMPTS}/{prompt_id}/versions", json=fields, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client, name="Prompt Owner")


@pytest.fixture
async def project_id(client: httpx.AsyncClient, owner: Account) -> str:
    return await new_project(client, owner)


# --- CRUD ------------------------------------------------------------------------------------


async def test_create_prompt_makes_version_one(client, owner, project_id):
    prompt = await new_prompt(
        client,
        owner,
        project_id,
        description="Says hello",
        system_prompt="You are {{ persona }}.",
        parameters={"temperature": 0.2, "max_tokens": 50},
        note="first draft",
        labels=["production"],
    )
    assert prompt["name"] == "Greeter"
    assert prompt["project_id"] == project_id
    assert prompt["description"] == "Says hello"
    assert prompt["latest_version"] == 1
    assert prompt["labels"] == {"production": 1}

    version = (
        await client.get(f"{PROMPTS}/{prompt['id']}/versions/1", headers=owner.headers)
    ).json()
    assert version["number"] == 1
    assert version["prompt_id"] == prompt["id"]
    assert version["template"] == "Hello {{ name }}!"
    assert version["system_prompt"] == "You are {{ persona }}."
    assert version["parameters"] == {"temperature": 0.2, "max_tokens": 50}
    assert version["note"] == "first draft"
    assert version["labels"] == ["production"]


async def test_read_list_filter_and_search(client, owner, project_id):
    other_project = await new_project(client, owner, "Other")
    greeter = await new_prompt(client, owner, project_id, name="Greeter")
    await new_prompt(client, owner, project_id, name="Summarizer")
    await new_prompt(client, owner, other_project, name="Greeter")

    read = await client.get(f"{PROMPTS}/{greeter['id']}", headers=owner.headers)
    assert read.status_code == 200
    assert read.json() == greeter

    everything = (await client.get(PROMPTS, headers=owner.headers)).json()
    assert everything["total"] == 3
    in_project = (
        await client.get(PROMPTS, params={"project_id": project_id}, headers=owner.headers)
    ).json()
    assert in_project["total"] == 2
    assert [p["name"] for p in in_project["items"]] == ["Greeter", "Summarizer"]
    searched = (await client.get(PROMPTS, params={"q": "summ"}, headers=owner.headers)).json()
    assert [p["name"] for p in searched["items"]] == ["Summarizer"]
    paged = (await client.get(PROMPTS, params={"limit": 1}, headers=owner.headers)).json()
    assert (len(paged["items"]), paged["total"], paged["limit"]) == (1, 3, 1)


async def test_update_name_and_description(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, description="old")
    response = await client.patch(
        f"{PROMPTS}/{prompt['id']}",
        json={"name": "Welcomer", "description": None},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["description"]) == ("Welcomer", None)
    again = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert again["name"] == "Welcomer"
    assert again["latest_version"] == 1  # renaming does not make a version


async def test_name_cannot_be_nulled(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.patch(
        f"{PROMPTS}/{prompt['id']}", json={"name": None}, headers=owner.headers
    )
    assert_problem(response, 422, field="name")


async def test_delete_prompt_removes_it_and_its_versions(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    await new_version(client, owner, prompt["id"], template="v2", labels=["staging"])
    response = await client.delete(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)
    assert response.status_code == 204
    for path in ("", "/versions/1", "/versions/staging", "/versions"):
        assert_problem(
            await client.get(f"{PROMPTS}/{prompt['id']}{path}", headers=owner.headers), 404
        )
    assert_problem(await client.delete(f"{PROMPTS}/{prompt['id']}", headers=owner.headers), 404)


async def test_duplicate_name_in_a_project_is_conflict(client, owner, project_id):
    await new_prompt(client, owner, project_id, name="Twin")
    duplicate = await client.post(
        PROMPTS,
        json={"project_id": project_id, "name": "Twin", "template": "x"},
        headers=owner.headers,
    )
    assert_problem(duplicate, 409)
    # Another project may use the name; a rename onto a taken name is a conflict too.
    other = await new_project(client, owner, "Elsewhere")
    await new_prompt(client, owner, other, name="Twin")
    second = await new_prompt(client, owner, project_id, name="Second")
    renamed = await client.patch(
        f"{PROMPTS}/{second['id']}", json={"name": "Twin"}, headers=owner.headers
    )
    assert_problem(renamed, 409)
    kept = (await client.get(f"{PROMPTS}/{second['id']}", headers=owner.headers)).json()
    assert kept["name"] == "Second"


# --- versions ----------------------------------------------------------------------------------


async def test_versions_are_numbered_and_old_ones_stay_intact(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, template="one {{ name }}")
    first = (await client.get(f"{PROMPTS}/{prompt['id']}/versions/1", headers=owner.headers)).json()
    second = await new_version(
        client, owner, prompt["id"], template="two {{ name }}", parameters={"temperature": 1}
    )
    third = await new_version(client, owner, prompt["id"], template="three", note="shorter")
    assert (second["number"], third["number"]) == (2, 3)
    assert second["parameters"] == {"temperature": 1}
    assert third["parameters"] == {}

    again = (await client.get(f"{PROMPTS}/{prompt['id']}/versions/1", headers=owner.headers)).json()
    assert again == first
    listed = (await client.get(f"{PROMPTS}/{prompt['id']}/versions", headers=owner.headers)).json()
    assert listed["total"] == 3
    assert [v["number"] for v in listed["items"]] == [3, 2, 1]
    assert [v["template"] for v in listed["items"]] == ["three", "two {{ name }}", "one {{ name }}"]
    read = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert read["latest_version"] == 3


async def test_numbering_is_per_prompt(client, owner, project_id):
    first = await new_prompt(client, owner, project_id, name="A")
    await new_version(client, owner, first["id"], template="A2")
    second = await new_prompt(client, owner, project_id, name="B")
    assert second["latest_version"] == 1
    assert (await new_version(client, owner, second["id"], template="B2"))["number"] == 2


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_a_version_cannot_be_edited_or_deleted(client, owner, project_id, method):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.request(
        method,
        f"{PROMPTS}/{prompt['id']}/versions/1",
        json={"template": "changed"},
        headers=owner.headers,
    )
    assert_problem(response, 405)
    version = (
        await client.get(f"{PROMPTS}/{prompt['id']}/versions/1", headers=owner.headers)
    ).json()
    assert version["template"] == "Hello {{ name }}!"


async def test_the_database_refuses_to_update_a_version(client, database, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    with pytest.raises(DBAPIError, match="permission denied"):
        async with tenant_session(database, owner.organization_id) as session:
            await session.execute(
                text("UPDATE prompt_versions SET template = 'tampered' WHERE prompt_id = :id"),
                {"id": prompt["id"]},
            )
    version = (
        await client.get(f"{PROMPTS}/{prompt['id']}/versions/1", headers=owner.headers)
    ).json()
    assert version["template"] == "Hello {{ name }}!"


async def test_unknown_version_is_404(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    for ref in ("2", "0", "nolabel"):
        response = await client.get(
            f"{PROMPTS}/{prompt['id']}/versions/{ref}", headers=owner.headers
        )
        assert_problem(response, 404)


async def test_an_unknown_version_is_named_short(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    url = f"{PROMPTS}/{prompt['id']}/render"
    response = await client.post(url, json={"version": "v" * 10_000}, headers=owner.headers)
    detail = assert_problem(response, 422, field="version")["detail"]
    assert detail == f"Prompt version {'v' * 99 + '…'!r} not found"


@pytest.mark.parametrize("ref", ["99999999999", "\u00b2", "\uff11"])
async def test_odd_version_numbers_are_404_not_a_crash(client, owner, project_id, ref):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.get(f"{PROMPTS}/{prompt['id']}/versions/{ref}", headers=owner.headers)
    assert_problem(response, 404)


async def test_latest_follows_new_versions(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    path = f"{PROMPTS}/{prompt['id']}/versions/latest"
    assert (await client.get(path, headers=owner.headers)).json()["number"] == 1
    await new_version(client, owner, prompt["id"], template="newest")
    latest = (await client.get(path, headers=owner.headers)).json()
    assert (latest["number"], latest["template"]) == (2, "newest")


# --- labels --------------------------------------------------------------------------------


async def test_labels_are_created_moved_fetched_and_deleted(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, template="v1")
    prompt_id = prompt["id"]
    await new_version(client, owner, prompt_id, template="v2")
    await new_version(client, owner, prompt_id, template="v3", labels=["canary"])

    created = await client.put(
        f"{PROMPTS}/{prompt_id}/labels/production", json={"version": 1}, headers=owner.headers
    )
    assert created.status_code == 200, created.text
    assert created.json()["labels"] == {"canary": 3, "production": 1}
    by_label = await client.get(f"{PROMPTS}/{prompt_id}/versions/production", headers=owner.headers)
    assert (by_label.json()["number"], by_label.json()["template"]) == (1, "v1")
    assert by_label.json()["labels"] == ["production"]

    moved = await client.put(
        f"{PROMPTS}/{prompt_id}/labels/production", json={"version": 2}, headers=owner.headers
    )
    assert moved.json()["labels"] == {"canary": 3, "production": 2}
    by_label = await client.get(f"{PROMPTS}/{prompt_id}/versions/production", headers=owner.headers)
    assert by_label.json()["template"] == "v2"
    old = (await client.get(f"{PROMPTS}/{prompt_id}/versions/1", headers=owner.headers)).json()
    assert old["labels"] == []

    deleted = await client.delete(f"{PROMPTS}/{prompt_id}/labels/production", headers=owner.headers)
    assert deleted.status_code == 204
    assert_problem(
        await client.get(f"{PROMPTS}/{prompt_id}/versions/production", headers=owner.headers), 404
    )
    read = (await client.get(f"{PROMPTS}/{prompt_id}", headers=owner.headers)).json()
    assert read["labels"] == {"canary": 3}
    assert read["latest_version"] == 3  # the version itself stays


async def test_several_labels_on_one_version(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    version = await new_version(
        client, owner, prompt["id"], template="v2", labels=["staging", "beta", "staging"]
    )
    assert sorted(version["labels"]) == ["beta", "staging"]


async def test_a_new_version_can_take_a_label_over(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, labels=["production"])
    await new_version(client, owner, prompt["id"], template="v2", labels=["production"])
    read = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert read["labels"] == {"production": 2}


async def test_deleting_an_unknown_label_is_404(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.delete(f"{PROMPTS}/{prompt['id']}/labels/nope", headers=owner.headers)
    assert_problem(response, 404)


async def test_a_label_must_point_at_an_existing_version(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.put(
        f"{PROMPTS}/{prompt['id']}/labels/production", json={"version": 7}, headers=owner.headers
    )
    assert_problem(response, 422, field="version")


async def test_true_is_no_version_number(client, owner, project_id):
    """JSON's true would otherwise read as version 1."""
    prompt = await new_prompt(client, owner, project_id)
    label = await client.put(
        f"{PROMPTS}/{prompt['id']}/labels/production", json={"version": True}, headers=owner.headers
    )
    assert_problem(label, 422, field="body.version")
    render = await client.post(
        f"{PROMPTS}/{prompt['id']}/render", json={"version": True}, headers=owner.headers
    )
    assert_problem(render, 422)


@pytest.mark.parametrize("version", [2**31 - 1, 2**31, 10**30])
async def test_a_version_past_the_column_is_refused_naming_it(client, owner, project_id, version):
    """Version numbers are 32-bit integers in the database: a larger one is refused by the
    body's schema (naming `version`), not by the database (naming nothing)."""
    prompt = await new_prompt(client, owner, project_id)
    response = await client.put(
        f"{PROMPTS}/{prompt['id']}/labels/production",
        json={"version": version},
        headers=owner.headers,
    )
    body = assert_problem(response, 422, field="version")
    if version > 2**31 - 1:
        assert "less than or equal to 2147483647" in body["errors"][0]["message"], body


@pytest.mark.parametrize(
    ("label", "body"),
    [
        ("latest", {"version": 1}),  # reserved: `latest` always means the newest version
        ("3", {"version": 1}),  # a number would be read as a version number
        ("-bad", {"version": 1}),
        ("a" * 101, {"version": 1}),
        ("ok", {"version": 0}),
        ("ok", {"version": "one"}),
        ("ok", {}),
        ("ok", {"version": 1, "extra": True}),
    ],
)
async def test_bad_labels_are_refused(client, owner, project_id, label, body):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.put(
        f"{PROMPTS}/{prompt['id']}/labels/{label}", json=body, headers=owner.headers
    )
    assert_problem(response, 422)
    read = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert read["labels"] == {}


@pytest.mark.parametrize("label", ["latest", "12", "bad label", "-x"])
async def test_bad_labels_on_a_new_version_are_refused(client, owner, project_id, label):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/versions",
        json={"template": "v2", "labels": [label]},
        headers=owner.headers,
    )
    assert_problem(response, 422, field="labels.0")
    read = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert (read["latest_version"], read["labels"]) == (1, {})


# --- rendering -----------------------------------------------------------------------------


async def test_render_with_variables_and_system_prompt(client, owner, project_id):
    prompt = await new_prompt(
        client,
        owner,
        project_id,
        template="Hello {{ name }}, you asked: {{ question | upper }}{% for t in tags %} #{{ t }}"
        "{% endfor %}",
        system_prompt="You are {{ persona }}.",
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render",
        json={
            "variables": {
                "name": "Ada",
                "question": "why?",
                "tags": ["a", "b"],
                "persona": "a helpful assistant",
            }
        },
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "version": 1,
        "text": "Hello Ada, you asked: WHY? #a #b",
        "system_prompt": "You are a helpful assistant.",
    }


async def test_render_picks_the_version_by_number_label_or_latest(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, template="one {{ x }}")
    await new_version(client, owner, prompt["id"], template="two {{ x }}", labels=["staging"])
    await new_version(client, owner, prompt["id"], template="three {{ x }}")
    path = f"{PROMPTS}/{prompt['id']}/render"
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "three 0"),
        ({"version": "latest"}, "three 0"),
        ({"version": 1}, "one 0"),
        ({"version": "1"}, "one 0"),
        ({"version": "staging"}, "two 0"),
    ]
    for extra, expected in cases:
        response = await client.post(
            path, json={"variables": {"x": 0}, **extra}, headers=owner.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["text"] == expected, extra
    missing = await client.post(
        path, json={"variables": {"x": 0}, "version": "production"}, headers=owner.headers
    )
    assert_problem(missing, 422, field="version")


async def test_render_without_system_prompt(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, template="plain")
    response = await client.post(f"{PROMPTS}/{prompt['id']}/render", json={}, headers=owner.headers)
    assert response.json() == {"version": 1, "text": "plain", "system_prompt": None}


async def test_missing_variable_is_named(client, owner, project_id):
    prompt = await new_prompt(
        client, owner, project_id, template="{{ greeting }} {{ name }}", system_prompt="{{ role }}"
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render",
        json={"variables": {"greeting": "Hi", "role": "bot"}},
        headers=owner.headers,
    )
    body = assert_problem(response, 422, field="variables.name")
    assert "name" in body["detail"]
    assert [e["field"] for e in body["errors"]] == ["body.variables.name"]


async def test_missing_variable_in_the_system_prompt_is_named(client, owner, project_id):
    prompt = await new_prompt(
        client, owner, project_id, template="{{ name }}", system_prompt="You are {{ persona }}"
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render", json={"variables": {"name": "x"}}, headers=owner.headers
    )
    body = assert_problem(response, 422, field="variables.persona")
    assert "persona" in body["detail"]


@pytest.mark.parametrize("template", ["{{ user.name }}", "{{ user.name | tojson }}"])
async def test_missing_attribute_of_a_variable_is_422_naming_it(
    client, owner, project_id, template
):
    prompt = await new_prompt(client, owner, project_id, template=template)
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render",
        json={"variables": {"user": {"id": 1}}},
        headers=owner.headers,
    )
    body = assert_problem(response, 422, field="variables")
    assert "'name'" in body["detail"]


@pytest.mark.parametrize(
    "template",
    [
        "{{ x.__class__ }}",
        "{{ x.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__init__.__globals__ }}",
        "{{ items.append(1) }}",  # the sandbox is immutable
        "{{ x.format.__globals__ }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    ],
)
async def test_the_sandbox_blocks_unsafe_access(client, owner, project_id, template):
    prompt = await new_prompt(client, owner, project_id, template=template)
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render",
        json={"variables": {"x": "text", "items": [1, 2]}},
        headers=owner.headers,
    )
    body = assert_problem(response, 422, field="template")
    assert "not allowed" in body["detail"] or "unsafe" in body["detail"]
    assert "<class" not in response.text


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 10**10 }}",
        "{{ 10**10 * 'ab' }}",
        "{{ [0] * 10**9 }}",
        "{{ 7 ** 1000000000 }}",  # (** is left-associative in Jinja)
        "{{ ('ab' * 1000) * 1000 }}",
        "{% for i in range(100000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}",
        "{{ 'x'.ljust(200000000) }}",
        "{{ '%200000000s'|format('x') }}",
        "{% set ns = namespace(x='x') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
        "{% endfor %}",
    ],
)
async def test_resource_bombs_are_refused_quickly(client, owner, project_id, template):
    started = time.monotonic()
    prompt = await new_prompt(client, owner, project_id, template=template)  # saving is safe
    response = await client.post(f"{PROMPTS}/{prompt['id']}/render", json={}, headers=owner.headers)
    assert_problem(response, 422, field="template")
    assert time.monotonic() - started < 5


async def test_ordinary_arithmetic_still_renders(client, owner, project_id):
    prompt = await new_prompt(
        client, owner, project_id, template="{{ '-' * 3 }}{{ 2 ** 10 }} {{ n * 2 }} {{ [1] * 2 }}"
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render", json={"variables": {"n": 21}}, headers=owner.headers
    )
    assert response.json()["text"] == "---1024 42 [1, 1]"


async def test_sandbox_applies_to_the_system_prompt(client, owner, project_id):
    prompt = await new_prompt(
        client, owner, project_id, template="ok", system_prompt="{{ x.__class__.__mro__ }}"
    )
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/render", json={"variables": {"x": 1}}, headers=owner.headers
    )
    assert_problem(response, 422)
    assert "<class" not in response.text


@pytest.mark.parametrize(
    ("field", "source", "line"),
    [
        ("template", "Hello {{ name", 1),
        ("template", "line one\nline two\n{% if x %}\nno end", 3),  # the unclosed block
        ("template", "a\n{{ 1 + }}", 2),
        ("template", "{% endfor %}", 1),
        ("system_prompt", "ok\n\n{{ broken(", 3),
    ],
)
async def test_template_syntax_error_is_422_with_the_line(
    client, owner, project_id, field, source, line
):
    body = {"project_id": project_id, "name": "Broken", "template": "fine", field: source}
    response = await client.post(PROMPTS, json=body, headers=owner.headers)
    problem = assert_problem(response, 422, field=field)
    error = next(e for e in problem["errors"] if e["field"] == f"body.{field}")
    assert error["line"] == line
    assert f"line {line}" in problem["detail"]
    # Nothing was saved.
    listed = (await client.get(PROMPTS, headers=owner.headers)).json()
    assert listed["total"] == 0

    prompt = await new_prompt(client, owner, project_id)
    response = await client.post(
        f"{PROMPTS}/{prompt['id']}/versions",
        json={"template": "fine", field: source},
        headers=owner.headers,
    )
    problem = assert_problem(response, 422, field=field)
    assert next(e for e in problem["errors"] if e["field"] == f"body.{field}")["line"] == line
    read = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert read["latest_version"] == 1


# --- authorization -------------------------------------------------------------------------


async def test_viewer_reads_and_renders_but_cannot_write(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, labels=["production"])
    viewer = await add_member(client, owner, "viewer")
    base = f"{PROMPTS}/{prompt['id']}"
    for path in ("", "/versions", "/versions/1", "/versions/production", "/versions/latest"):
        response = await client.get(f"{base}{path}", headers=viewer.headers)
        assert response.status_code == 200, (path, response.text)
    assert (await client.get(PROMPTS, headers=viewer.headers)).json()["total"] == 1
    rendered = await client.post(
        f"{base}/render", json={"variables": {"name": "V"}}, headers=viewer.headers
    )
    assert rendered.json()["text"] == "Hello V!"

    writes = [
        ("POST", PROMPTS, {"project_id": project_id, "name": "New", "template": "x"}),
        ("PATCH", base, {"name": "Renamed"}),
        ("POST", f"{base}/versions", {"template": "v2"}),
        ("PUT", f"{base}/labels/staging", {"version": 1}),
        ("DELETE", f"{base}/labels/production", None),
        ("DELETE", base, None),
    ]
    for method, path, body in writes:
        response = await client.request(method, path, json=body, headers=viewer.headers)
        assert_problem(response, 403)
    unchanged = (await client.get(base, headers=owner.headers)).json()
    assert unchanged == prompt


async def test_member_can_write(client, owner, project_id):
    member = await add_member(client, owner, "member")
    prompt = await new_prompt(client, member, project_id)
    assert (await new_version(client, member, prompt["id"], template="v2"))["number"] == 2


async def test_another_organizations_prompt_is_404(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id, labels=["production"])
    stranger = await register(client, name="Stranger")
    base = f"{PROMPTS}/{prompt['id']}"
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", base, None),
        ("PATCH", base, {"name": "Mine"}),
        ("DELETE", base, None),
        ("GET", f"{base}/versions", None),
        ("GET", f"{base}/versions/1", None),
        ("GET", f"{base}/versions/production", None),
        ("POST", f"{base}/versions", {"template": "hijack"}),
        ("PUT", f"{base}/labels/production", {"version": 1}),
        ("DELETE", f"{base}/labels/production", None),
        ("POST", f"{base}/render", {"variables": {"name": "x"}}),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, headers=stranger.headers)
        assert_problem(response, 404)
    assert (await client.get(PROMPTS, headers=stranger.headers)).json()["total"] == 0
    unchanged = (await client.get(base, headers=owner.headers)).json()
    assert unchanged == prompt


async def test_prompt_in_another_organizations_project_is_422(client, owner, project_id):
    stranger = await register(client, name="Stranger")
    for project in (project_id, str(uuid.uuid4())):
        response = await client.post(
            PROMPTS,
            json={"project_id": project, "name": "Sneaky", "template": "x"},
            headers=stranger.headers,
        )
        assert_problem(response, 422, field="project_id")


async def test_anonymous_is_401(client, owner, project_id):
    prompt = await new_prompt(client, owner, project_id)
    assert_problem(await client.get(f"{PROMPTS}/{prompt['id']}"), 401)
    assert_problem(await client.get(PROMPTS), 401)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"admin": True}, "admin"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": None}, "name"),
        ({"template": ""}, "template"),
        ({"template": "x" * 100_001}, "template"),
        ({"template": None}, "template"),
        ({"system_prompt": "x" * 100_001}, "system_prompt"),
        ({"description": "x" * 10_001}, "description"),
        ({"note": "x" * 2001}, "note"),
        ({"project_id": "not-a-uuid"}, "project_id"),
        ({"parameters": {"temperature": 3}}, "parameters.temperature"),
        ({"parameters": {"colour": "blue"}}, "parameters.colour"),
        ({"labels": ["ok"] * 21}, "labels"),
    ],
)
async def test_bad_create_bodies_name_the_field(client, owner, project_id, changes, field):
    body = {"project_id": project_id, "name": "P", "template": "x", **changes}
    response = await client.post(PROMPTS, json=body, headers=owner.headers)
    assert_problem(response, 422, field=field)
    assert (await client.get(PROMPTS, headers=owner.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        ("", "PATCH", {"template": "edited"}, "template"),
        ("", "PATCH", {"name": "x" * 201}, "name"),
        ("/versions", "POST", {"template": "x", "number": 9}, "number"),
        ("/versions", "POST", {}, "template"),
        ("/render", "POST", {"variables": {}, "strict": False}, "strict"),
        ("/render", "POST", {"variables": ["not", "a", "dict"]}, "variables"),
    ],
)
async def test_bad_bodies_on_a_prompt_name_the_field(
    client, owner, project_id, path, method, body, field
):
    prompt = await new_prompt(client, owner, project_id)
    response = await client.request(
        method, f"{PROMPTS}/{prompt['id']}{path}", json=body, headers=owner.headers
    )
    assert_problem(response, 422, field=field)
    read = (await client.get(f"{PROMPTS}/{prompt['id']}", headers=owner.headers)).json()
    assert read == prompt


async def test_bad_ids_are_422_and_unknown_ids_404(client, owner):
    assert_problem(await client.get(f"{PROMPTS}/not-a-uuid", headers=owner.headers), 422)
    assert_problem(await client.get(f"{PROMPTS}/{uuid.uuid4()}", headers=owner.headers), 404)
