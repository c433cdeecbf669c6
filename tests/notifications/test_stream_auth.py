"""Who may watch a run's live stream and page: a stream token of that very run (?token=), or
an Authorization header (access token or API key) of the run's organization."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.helpers import (
    Account,
    assert_problem,
    bearer,
    create_api_key,
    register,
    remove_account,
)
from tests.notifications.conftest import Event, Live, read_events
from utils.auth import Principal, Role, issue_stream_token


@pytest.fixture
async def stranger(live: Live, owner_engine) -> AsyncIterator[Account]:
    """A user of another organization (removed at the end)."""
    account = await register(live.client)
    try:
        yield account
    finally:
        await remove_account(owner_engine, account)


async def _finished_run(live: Live, cases: int = 3) -> dict[str, Any]:
    target = await live.model(provider="demo")
    test_set = await live.test_set([{"input": f"q{i}"} for i in range(cases)])
    run = await live.run(test_set, target, metric_ids=[await live.any_answer()])
    done = await live.wait(run["id"])
    assert done["status"] == "completed", done
    return done


def _assert_whole_run(seen: list[Event], cases: int) -> None:
    types = [e.event for e in seen]
    assert types[0] == "run.started"
    assert types[-1] == "run.finished"
    assert types.count("result.recorded") == cases
    assert [int(e.id) for e in seen if e.id is not None] == list(range(1, len(seen) + 1))


def _assert_unauthorized(response: httpx.Response, *secrets: str) -> dict[str, Any]:
    body = assert_problem(response, 401)
    for secret in secrets:
        assert secret not in response.text
    return body


async def test_the_stream_token_opens_the_events_and_the_page(live: Live) -> None:
    run = await _finished_run(live)
    issued = await live.post(f"/runs/{run['id']}/stream-token", {}, expect=200)
    body = issued.json()
    token = body["token"]
    assert body["events_url"] == f"/public/runs/{run['id']}/events?token={token}"
    assert body["page_url"] == f"/public/runs/{run['id']}?token={token}"
    assert body["expires_at"]

    response, seen = await live.whole_stream(run["id"], params={"token": token})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    _assert_whole_run(seen, 3)

    # The URLs handed out work as they are.
    async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
        async with client.stream("GET", body["events_url"]) as streamed:
            assert streamed.status_code == 200
            again = [e async for e in read_events(streamed) if e.event]
        assert [e.event for e in again] == [e.event for e in seen]

        page = await client.get(body["page_url"])
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "<html" in page.text.lower()

        # The page without any credential is refused too.
        bare = await client.get(f"/public/runs/{run['id']}")
        _assert_unauthorized(bare)


async def test_an_authorization_header_works_instead_of_a_token(live: Live) -> None:
    run = await _finished_run(live)
    response, seen = await live.whole_stream(run["id"], headers=live.account.headers)
    assert response.status_code == 200
    _assert_whole_run(seen, 3)

    key = await create_api_key(live.client, live.account, "viewer")
    response, seen = await live.whole_stream(run["id"], headers=bearer(key["key"]))
    assert response.status_code == 200
    _assert_whole_run(seen, 3)

    async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
        page = await client.get(f"/public/runs/{run['id']}", headers=live.account.headers)
    assert page.status_code == 200
    assert "content-security-policy" in page.headers


async def test_another_organizations_run_is_not_found(live: Live, stranger: Account) -> None:
    run = await _finished_run(live)
    response, _ = await live.whole_stream(run["id"], headers=stranger.headers)
    assert_problem(response, 404)
    async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
        page = await client.get(f"/public/runs/{run['id']}", headers=stranger.headers)
    assert_problem(page, 404)
    # Nor can the stranger get a stream token for it.
    refused = await live.client.post(
        f"/api/v1/runs/{run['id']}/stream-token", json={}, headers=stranger.headers
    )
    assert_problem(refused, 404)


async def test_bad_tokens_are_refused_without_echoing_them(live: Live, runtime) -> None:
    run_a = await _finished_run(live, cases=1)
    run_b = await _finished_run(live, cases=1)
    token_a = await live.stream_token(run_a["id"])
    org = live.account.organization_id

    # A token of run A on run B.
    response, _ = await live.whole_stream(run_b["id"], params={"token": token_a})
    body = _assert_unauthorized(response, token_a)
    assert "another run" in body["detail"]
    async with httpx.AsyncClient(base_url=live.base_url, timeout=30) as client:
        page = await client.get(f"/public/runs/{run_b['id']}", params={"token": token_a})
    _assert_unauthorized(page, token_a)

    # Expired.
    expired, _ = issue_stream_token(
        secret=runtime.secret_key,
        run_id=uuid.UUID(run_a["id"]),
        principal=Principal(organization_id=org, role=Role.viewer, api_key_id=uuid.uuid4()),
        lifetime=timedelta(seconds=-60),
    )
    response, _ = await live.whole_stream(run_a["id"], params={"token": expired})
    body = _assert_unauthorized(response, expired)
    assert "expired" in body["detail"]

    # Signed with another secret.
    forged, _ = issue_stream_token(
        secret="not-the-secret-" + "x" * 40,
        run_id=uuid.UUID(run_a["id"]),
        principal=Principal(organization_id=org, role=Role.viewer, api_key_id=uuid.uuid4()),
        lifetime=timedelta(minutes=5),
    )
    response, _ = await live.whole_stream(run_a["id"], params={"token": forged})
    _assert_unauthorized(response, forged)

    # Garbage, and an access token passed as a stream token.
    for garbage in ("garbage-token-123", live.account.access_token):
        response, _ = await live.whole_stream(run_a["id"], params={"token": garbage})
        _assert_unauthorized(response, garbage)

    # No credential at all.
    response, _ = await live.whole_stream(run_a["id"])
    _assert_unauthorized(response)

    # The good token still works on its own run.
    response, seen = await live.whole_stream(run_a["id"], params={"token": token_a})
    assert response.status_code == 200
    _assert_whole_run(seen, 1)


async def test_a_malformed_last_event_id_is_a_422_naming_the_header(live: Live) -> None:
    run = await _finished_run(live, cases=1)
    token = await live.stream_token(run["id"])
    # Superscript two is a digit to str.isdigit, and no number to int().
    for malformed in (b"abc", b"\xb2", b"1\xb2", b"-1"):
        response, _ = await live.whole_stream(
            run["id"], params={"token": token}, headers={b"Last-Event-ID": malformed}
        )
        assert_problem(response, 422, field="Last-Event-ID")
        assert token not in response.text

    # A valid one replays only what follows it.
    response, seen = await live.whole_stream(
        run["id"], params={"token": token}, headers={"Last-Event-ID": "1"}
    )
    assert response.status_code == 200
    assert seen and int(seen[0].id or 0) == 2
    assert seen[-1].event == "run.finished"
