"""Saving a prompt checks its templates without running them, in the save-check threads: the event
loop keeps serving, however costly the template would be to render, and a template too deep to
compile is a 422 naming its field, never a 500."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.database.prompts.test_prompts import PROMPTS, new_project
from tests.helpers import Account, assert_problem, longest_stall, register
from utils import templates


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client, name="Template Owner")


@pytest.fixture
async def project_id(client: httpx.AsyncClient, owner: Account) -> str:
    return await new_project(client, owner)


COSTLY = {
    "wordwrap of a constant": '{{ "x y"|center(200000)|wordwrap(1) }}',
    "sort of a constant": '{{ "ab"|center(400000)|sort|join }}',
}


@pytest.mark.parametrize("template", COSTLY.values(), ids=COSTLY.keys())
async def test_saving_a_costly_template_is_quick_and_rendering_it_is_refused(
    client, owner, project_id, template
):
    # CPU time, not wall time: other processes on a busy machine do not count.
    started = time.process_time()
    body = {"project_id": project_id, "name": "Costly", "template": template}
    saved, stall = await longest_stall(client.post(PROMPTS, json=body, headers=owner.headers))
    assert saved.status_code == 201, saved.text
    assert stall < 0.5
    response = await client.post(
        f"{PROMPTS}/{saved.json()['id']}/render", json={}, headers=owner.headers
    )
    assert "too costly" in assert_problem(response, 422, field="template")["detail"]
    assert time.process_time() - started < 3


async def test_templates_are_checked_in_the_save_check_threads(
    client, owner, project_id, monkeypatch
):
    threads: list[str] = []
    check = templates.check_template

    def spy(source: str, *, field: str) -> set[str]:
        threads.append(threading.current_thread().name)
        return check(source, field=field)

    monkeypatch.setattr(templates, "check_template", spy)
    body = {
        "project_id": project_id,
        "name": "P",
        "template": "Hi {{ name }}",
        "system_prompt": "S",
    }
    response = await client.post(PROMPTS, json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    response = await client.post(
        f"{PROMPTS}/{response.json()['id']}/versions",
        json={"template": "Bye {{ name }}"},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    assert len(threads) == 3
    assert all(name.startswith("save-check") for name in threads), threads


TOO_DEEP = {
    "brackets": "{{ " + "(" * 100 + "1" + ")" * 100 + " }}",
    "for blocks": "{% for x in y %}" * 30 + "{% endfor %}" * 30,
    "filter chain": "{{ x" + "|trim" * 600 + " }}",
    "long number": "{{ " + "9" * 5000 + " }}",
}


@pytest.mark.parametrize("field", ["template", "system_prompt"])
@pytest.mark.parametrize("source", TOO_DEEP.values(), ids=TOO_DEEP.keys())
async def test_a_template_too_deep_to_compile_is_422_naming_its_field(
    client, owner, project_id, field, source
):
    started = time.monotonic()
    body = {"project_id": project_id, "name": "Deep", "template": "fine", field: source}
    response = await client.post(PROMPTS, json=body, headers=owner.headers)
    problem = assert_problem(response, 422, field=field)
    assert problem["detail"].startswith("template does not compile")
    assert (await client.get(PROMPTS, headers=owner.headers)).json()["total"] == 0
    assert time.process_time() - started < 3
