"""Revocation reaches stream tokens and API keys: a removed member's stream token stops
opening streams (checked at every opening, so a reconnect after the removal is refused), the
API keys a removed admin created stop working, and a stream token issued by a revoked key
stops too. Over real HTTP, against a live server."""

from __future__ import annotations

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import add_member, assert_problem, bearer, create_api_key
from tests.notifications.conftest import Live, read_events


async def _token(live: Live, run_id: str, headers: dict[str, str]) -> str:
    response = await live.client.post(f"/api/v1/runs/{run_id}/stream-token", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def _finished_run(live: Live) -> dict:
    target = await live.model(provider="demo")
    test_set = await live.test_set([{"input": "q"}])
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    return await live.wait(run["id"])


async def _open(live: Live, run_id: str, token: str, **headers: str) -> httpx.Response:
    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
        client.stream(
            "GET", live.events_url(run_id), params={"token": token}, headers=headers
        ) as response,
    ):
        await response.aread()
        return response


async def test_a_removed_members_stream_token_stops_at_the_next_opening(live: Live) -> None:
    member = await add_member(live.client, live.account, "member")
    with FakeOpenAI(require_api_key="sk-test", latency=0.3) as fake:
        target = await live.openai_model(fake)
        test_set = await live.test_set([{"input": f"q{i}"} for i in range(8)])
        run = await live.run(test_set, target, metric_ids=[await live.any_answer()], concurrency=1)
        token = await _token(live, run["id"], member.headers)
        last_id = None
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=30) as client,
            client.stream("GET", live.events_url(run["id"]), params={"token": token}) as stream,
        ):
            assert stream.status_code == 200
            async for event in read_events(stream):
                if event.id is not None:
                    last_id = event.id
                    break  # mid-stream: the member is removed now
            removed = await live.client.delete(
                f"/api/v1/organizations/{live.account.organization_id}/members/{member.user_id}",
                headers=live.account.headers,
            )
            assert removed.status_code == 204, removed.text
        assert last_id is not None
        again = await _open(live, run["id"], token, **{"Last-Event-ID": last_id})
        body = assert_problem(again, 401)
        assert "session" in body["detail"]
        assert token not in again.text
        await live.wait(run["id"])


async def test_keys_a_removed_admin_created_are_revoked_with_their_stream_tokens(
    live: Live,
) -> None:
    admin = await add_member(live.client, live.account, "admin")
    key = await create_api_key(live.client, admin, "member")
    run = await _finished_run(live)
    token = await _token(live, run["id"], bearer(key["key"]))
    assert (await _open(live, run["id"], token)).status_code == 200

    removed = await live.client.delete(
        f"/api/v1/organizations/{live.account.organization_id}/members/{admin.user_id}",
        headers=live.account.headers,
    )
    assert removed.status_code == 204, removed.text
    refused = await live.client.get(f"/api/v1/runs/{run['id']}", headers=bearer(key["key"]))
    assert_problem(refused, 401)
    body = assert_problem(await _open(live, run["id"], token), 401)
    assert "API key" in body["detail"]
    # Keys the owner made are not the removed admin's: they keep working.
    owners = await create_api_key(live.client, live.account, "viewer")
    kept = await live.client.get(f"/api/v1/runs/{run['id']}", headers=bearer(owners["key"]))
    assert kept.status_code == 200


async def test_a_stream_token_of_a_revoked_key_stops_opening(live: Live) -> None:
    key = await create_api_key(live.client, live.account, "viewer")
    run = await _finished_run(live)
    token = await _token(live, run["id"], bearer(key["key"]))
    assert (await _open(live, run["id"], token)).status_code == 200
    revoked = await live.client.delete(
        f"/api/v1/organizations/{live.account.organization_id}/api-keys/{key['id']}",
        headers=live.account.headers,
    )
    assert revoked.status_code == 204
    assert_problem(await _open(live, run["id"], token), 401)
