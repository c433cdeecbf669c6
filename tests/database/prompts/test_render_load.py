"""Renders through the API under load: the request's pooled connection is given back before
the render waits for a thread, and one organization renders at most two at a time, so one
flooding the render threads neither holds the pool nor keeps other organizations waiting."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from tests.helpers import Account, assert_problem, register, remove_account
from utils import templates

PROMPTS = "/api/v1/prompts"
HELD = "{# held #}Hello {{ name }}"


class HeldRenders:
    """Stands in for `templates.render`: a template marked `held` waits, in its render thread,
    until `release` is set; every other renders as it would."""

    def __init__(self) -> None:
        self._render = templates.render
        self.release = threading.Event()
        self._entered = threading.Semaphore(0)
        self.threads: list[str] = []

    def __call__(self, source: str, variables: dict[str, Any], **kwargs: Any) -> str:
        if "held" in source:
            self.threads.append(threading.current_thread().name)
            self._entered.release()
            self.release.wait(timeout=60)
        return self._render(source, variables, **kwargs)

    async def wait_until_entered(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self._entered.acquire, timeout=60)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch):
    renders = HeldRenders()
    monkeypatch.setattr(templates, "render", renders)
    try:
        yield renders
    finally:
        renders.release.set()


async def new_prompt(client: httpx.AsyncClient, account: Account, template: str) -> str:
    project = await client.post("/api/v1/projects", json={"name": "P"}, headers=account.headers)
    assert project.status_code == 201, project.text
    body = {"project_id": project.json()["id"], "name": "Greeter", "template": template}
    response = await client.post(PROMPTS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def render(client: httpx.AsyncClient, account: Account, prompt_id: str) -> asyncio.Task:
    request = client.post(
        f"{PROMPTS}/{prompt_id}/render",
        json={"variables": {"name": "Ada"}},
        headers=account.headers,
    )
    return asyncio.ensure_future(request)


async def test_a_waiting_render_holds_no_pooled_connection(
    committed_client, committed_owner, committed_database, held
):
    prompt_id = await new_prompt(committed_client, committed_owner, HELD)
    pool = committed_database.engine.sync_engine.pool
    before = pool.checkedout()

    waiting = [render(committed_client, committed_owner, prompt_id) for _ in range(2)]
    await held.wait_until_entered(2)
    assert pool.checkedout() == before
    held.release.set()

    for response in await asyncio.gather(*waiting):
        assert response.status_code == 200, response.text
        assert response.json()["text"] == "Hello Ada"


async def test_an_organization_past_its_renders_at_a_time_gets_429_and_others_still_render(
    committed_client, committed_owner, owner_engine, held
):
    prompt_id = await new_prompt(committed_client, committed_owner, HELD)
    other = await register(committed_client)
    try:
        other_prompt = await new_prompt(committed_client, other, "Hi {{ name }}")
        running = [render(committed_client, committed_owner, prompt_id) for _ in range(2)]
        await held.wait_until_entered(2)

        refused = await render(committed_client, committed_owner, prompt_id)
        assert_problem(refused, 429)
        assert refused.headers["Retry-After"] == "1"
        # The other organization's render runs while the first one's two are held.
        answered = await render(committed_client, other, other_prompt)
        assert answered.status_code == 200, answered.text
        assert answered.json()["text"] == "Hi Ada"

        held.release.set()
        assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
        assert all(name.startswith("template-interactive") for name in held.threads)
        # Its slots are given back: it renders again.
        again = await render(committed_client, committed_owner, prompt_id)
        assert again.status_code == 200, again.text
    finally:
        held.release.set()
        await remove_account(owner_engine, other)
