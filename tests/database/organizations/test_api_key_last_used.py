"""An API key's `last_used_at`: it moves at most once per resolution, and reads within the
resolution send no statement for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from database.organizations import crud, service
from tests.helpers import assert_problem, create_api_key, register


@pytest.fixture
def touches(monkeypatch) -> Iterator[list[uuid.UUID]]:
    """The keys whose `last_used_at` a statement was sent to write, in order; this process
    starts knowing of no key's last use."""
    sent: list[uuid.UUID] = []
    touch = crud.touch_api_key

    async def record(session, organization_id, key_id):
        sent.append(key_id)
        return await touch(session, organization_id, key_id)

    service._key_uses.forget()
    monkeypatch.setattr(crud, "touch_api_key", record)
    yield sent
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


async def test_a_request_that_fails_still_records_the_use(
    committed_client, committed_owner, touches
):
    """The key was used as soon as it authenticated a request, whatever the request's outcome
    (a stolen key probing for ids answers 404s): recorded apart, committed before the request
    runs, and not again within the resolution."""
    client, owner = committed_client, committed_owner
    key = await create_api_key(client, owner, "viewer")
    missing = await client.get(f"/api/v1/tests/{uuid.uuid4()}", headers={"X-API-Key": key["key"]})
    assert_problem(missing, 404)
    assert len(touches) == 1
    url = f"/api/v1/organizations/{owner.organization_id}/api-keys/{key['id']}"
    assert (await client.get(url, headers=owner.headers)).json()["last_used_at"] is not None
    await _use(client, owner, key["key"])
    assert len(touches) == 1


async def test_a_request_under_way_holds_no_lock_on_its_key(
    committed_database, committed_client, committed_owner, touches
):
    """A long request (an import, a comparison) that recorded its key's use: the key's other
    requests, in this process or another, and its revocation do not wait for it to end."""
    key = await create_api_key(committed_client, committed_owner, "admin")
    async with committed_database.sessionmaker() as under_way:
        await service.authenticate_api_key(under_way, key["key"])
        assert len(touches) == 1  # recorded, and its transaction is still open

        service._key_uses.forget()  # as another process, to which the key's use is due

        async def another_request() -> None:
            async with committed_database.sessionmaker() as session:
                await service.authenticate_api_key(session, key["key"])
                await session.commit()

        # Each finishes at once, or waits for the open transaction for ever.
        await asyncio.wait_for(another_request(), timeout=30)
        assert len(touches) == 2
        revoked = await asyncio.wait_for(
            committed_client.delete(
                f"/api/v1/organizations/{committed_owner.organization_id}/api-keys/{key['id']}",
                headers=committed_owner.headers,
            ),
            timeout=30,
        )
        assert revoked.status_code == 204, revoked.text
        await under_way.rollback()
