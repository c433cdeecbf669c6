"""An API key's `last_used_at`: it moves at most once per resolution, and reads within the
resolution send no statement for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event

from database.organizations import crud, service
from tests.helpers import assert_problem, create_api_key, register


@pytest.fixture
def touches(runtime_engine) -> Iterator[list[str]]:
    """The statements that write an API key's `last_used_at`, as sent; this process starts
    knowing of no key's last use."""
    sent: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        if "UPDATE api_keys SET last_used_at" in statement:
            sent.append(statement)

    service._key_uses.forget()
    event.listen(runtime_engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(runtime_engine.sync_engine, "before_cursor_execute", record)
    service._key_uses.forget()


async def _use(client, owner, key: str) -> None:
    url = f"/api/v1/organizations/{owner.organization_id}"
    response = await client.get(url, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text


async def _last_used(client, owner, key_id: str) -> datetime:
    url = f"/api/v1/organizations/{owner.organization_id}/api-keys/{key_id}"
    response = await client.get(url, headers=owner.headers)
    assert response.status_code == 200, response.text
    return datetime.fromisoformat(response.json()["last_used_at"])


async def test_reads_within_the_resolution_send_no_update(client, touches):
    owner = await register(client)
    key = await create_api_key(client, owner, "viewer")
    await _use(client, owner, key["key"])
    assert len(touches) == 1
    first = await _last_used(client, owner, key["id"])
    for _ in range(3):
        await _use(client, owner, key["key"])
    assert len(touches) == 1
    assert await _last_used(client, owner, key["id"]) == first


async def test_last_used_at_moves_once_the_resolution_has_passed(client, touches, monkeypatch):
    owner = await register(client)
    key = await create_api_key(client, owner, "viewer")
    monkeypatch.setattr(crud, "LAST_USED_RESOLUTION", timedelta(0))
    await _use(client, owner, key["key"])
    first = await _last_used(client, owner, key["id"])
    await _use(client, owner, key["key"])
    assert len(touches) == 2
    assert await _last_used(client, owner, key["id"]) > first


async def test_a_use_another_process_recorded_is_learned_and_kept(client, touches):
    """Another process's touch within the resolution: one statement, which changes nothing
    and tells this process when the key is next due."""
    owner = await register(client)
    key = await create_api_key(client, owner, "viewer")
    await _use(client, owner, key["key"])
    first = await _last_used(client, owner, key["id"])
    service._key_uses.forget()  # as a process that has not seen the key yet
    await _use(client, owner, key["key"])
    await _use(client, owner, key["key"])
    assert len(touches) == 2
    assert await _last_used(client, owner, key["id"]) == first


async def test_a_request_that_rolls_back_leaves_the_use_to_record_again(client, touches):
    owner = await register(client)
    key = await create_api_key(client, owner, "viewer")
    missing = await client.get(f"/api/v1/tests/{uuid.uuid4()}", headers={"X-API-Key": key["key"]})
    assert_problem(missing, 404)
    assert len(touches) == 1
    url = f"/api/v1/organizations/{owner.organization_id}/api-keys/{key['id']}"
    assert (await client.get(url, headers=owner.headers)).json()["last_used_at"] is None
    await _use(client, owner, key["key"])
    assert len(touches) == 2
    await _use(client, owner, key["key"])
    assert len(touches) == 2
