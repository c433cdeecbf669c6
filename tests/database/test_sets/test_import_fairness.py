"""Every organization's imports share two parsing threads: one organization's uploads take one
of them at a time, and never queue another organization's import behind them."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from database.evaluations import imports
from database.test_sets import service
from tests.database.evaluations.test_imports import _import
from tests.helpers import create_project, create_test_set, register, remove_account

HELD = b"# held until released\ntests:\n  - vars: {q: a}\n"
GUARD_SECONDS = 30  # only so that a failing run ends; nothing is timed


async def test_an_organizations_uploads_leave_a_thread_for_another_organizations_import(
    committed_client, committed_owner, owner_engine, monkeypatch
):
    """Two slow uploads of one organization (a 100 KB promptfoo file parsed for 25 s) held
    both threads, and a one-row CSV of another waited behind them."""
    released = threading.Event()
    order: list[str] = []
    real_parse = imports.parse_foreign

    def held(content: bytes, *args: Any) -> Any:
        if content == HELD:
            released.wait(GUARD_SECONDS)
            order.append("A parsed")
        return real_parse(content, *args)

    dispatched: list[object] = []
    both_dispatched = asyncio.Event()
    real_off_loop = imports.off_loop

    async def counted(*args: Any) -> Any:
        dispatched.append(args[1])
        if len(dispatched) == 2:
            both_dispatched.set()
        return await real_off_loop(*args)

    monkeypatch.setattr(imports, "parse_foreign", held)
    monkeypatch.setattr(imports, "off_loop", counted)
    client, a = committed_client, committed_owner
    a_set = await create_test_set(client, a, (await create_project(client, a))["id"])
    b = await register(client)
    try:
        b_set = await create_test_set(client, b, (await create_project(client, b))["id"])
        a_imports = [
            asyncio.create_task(_import(client, a, a_set["id"], HELD, "promptfoo"))
            for _ in range(2)
        ]
        # Both have gone to the threads (or to wait for their organization's turn).
        await both_dispatched.wait()
        b_import = await _import(client, b, b_set["id"], b"input\nhello\n", "csv")
        order.append("B imported")
        released.set()
        a_results = await asyncio.gather(*a_imports)
    finally:
        released.set()
        await remove_account(owner_engine, b)
    assert b_import.status_code == 201 and b_import.json()["imported"] == 1, b_import.text
    assert order == ["B imported", "A parsed", "A parsed"]
    assert [r.status_code for r in a_results] == [201, 201], [r.text for r in a_results]
    count = await client.get(f"/api/v1/test-sets/{a_set['id']}", headers=a.headers)
    assert count.json()["test_count"] == 2


async def test_an_import_cancelled_twice_keeps_its_turn_until_its_thread_ends():
    """Cancelled once, an import keeps its organization's turn while its parse runs on; a
    second cancel let the turn go, and the organization's next parse ran beside it, the
    organization holding both threads."""
    organization = uuid.uuid4()
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        order.append("first started")
        started.set()
        release.wait(GUARD_SECONDS)
        order.append("first ended")

    cancelled = asyncio.create_task(service.off_loop(organization, first))
    assert await asyncio.to_thread(started.wait, GUARD_SECONDS)
    cancelled.cancel()
    await asyncio.sleep(0)
    cancelled.cancel()
    following = asyncio.create_task(service.off_loop(organization, order.append, "next ran"))
    await asyncio.sleep(0.3)  # the next parse's chance to start, were the turn let go
    assert order == ["first started"]
    release.set()
    await following
    assert order == ["first started", "first ended", "next ran"]
    assert cancelled.cancelled()
