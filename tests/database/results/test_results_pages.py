"""GET /runs/{id}/results by cursor: pages that follow the (position, repetition) key, with no
result repeated and none skipped that was there at the start, even while results are written
between two pages (those written behind the cursor are for a later walk)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from database.core import Database, Tenant
from database.results import crud
from database.results.schemas import ResultRead
from tests.database.results.test_export_stream import _run
from tests.helpers import Account, assert_problem, register


def _result(owner: Account, run: dict[str, Any], position: int, repetition: int) -> dict:
    return {
        "id": uuid.uuid4(),
        "organization_id": owner.organization_id,
        "run_id": uuid.UUID(run["id"]),
        "position": position,
        "repetition": repetition,
        "test_id": uuid.UUID(run["test_ids"][position]),
        "input": {"text": f"question {position}"},
        "output": f"answer {position}.{repetition}",
        "status": "failed" if position % 3 == 0 else "passed",
        "latency_ms": 10.0,
        "input_tokens": 1,
        "output_tokens": 2,
        "cost": None,
        "cached": False,
        "error_type": None,
        "error_message": None,
        "trajectory": None,
    }


async def _write(database: Database, owner: Account, run: dict, keys: list[tuple[int, int]]):
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await crud.insert_results(session, [_result(owner, run, p, r) for p, r in keys])


async def _page(client: httpx.AsyncClient, owner: Account, run: dict, **params: Any) -> dict:
    response = await client.get(
        f"/api/v1/runs/{run['id']}/results", params=params, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_cursor_pages_walk_the_run_once_while_results_are_added(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=8, repetitions=2)
    # Every case's first repetition, and some second ones: the rest arrive during the walk.
    await _write(database, owner, run, [(p, 0) for p in range(8)] + [(1, 1), (5, 1)])
    late = [[(0, 1), (6, 1)], [(2, 1), (7, 1)], [(3, 1), (4, 1)]]

    seen: list[tuple[int, int]] = []
    page = await _page(client, owner, run, limit=3)
    assert page["total"] == 10
    while True:
        seen += [(item["position"], item["repetition"]) for item in page["items"]]
        if late:
            await _write(database, owner, run, late.pop(0))
        if page["next_cursor"] is None:
            break
        page = await _page(client, owner, run, limit=3, cursor=page["next_cursor"])

    assert seen == sorted(set(seen))  # in key order, none twice
    # Everything there at the start, and what was added ahead of the page reached; what was
    # added behind it is not for this walk (an offset would have shifted and repeated rows).
    behind = {(0, 1), (2, 1), (3, 1), (4, 1)}
    assert set(seen) == {(p, r) for p in range(8) for r in range(2)} - behind
    assert page["total"] == 16


async def test_a_page_by_offset_hands_on_a_cursor_and_a_filter_holds_across_pages(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=9, repetitions=1)
    await _write(database, owner, run, [(p, 0) for p in range(9)])

    by_offset = await _page(client, owner, run, limit=2, offset=2)
    assert [i["position"] for i in by_offset["items"]] == [2, 3]
    assert by_offset["offset"] == 2 and by_offset["total"] == 9
    following = await _page(client, owner, run, limit=2, cursor=by_offset["next_cursor"])
    assert [i["position"] for i in following["items"]] == [4, 5]

    failed: list[int] = []
    page = await _page(client, owner, run, limit=1, status="failed")
    while True:
        failed += [item["position"] for item in page["items"]]
        assert page["total"] == 3
        if page["next_cursor"] is None:
            break
        page = await _page(client, owner, run, limit=1, status="failed", cursor=page["next_cursor"])
    assert failed == [0, 3, 6]
    last = await _page(client, owner, run, limit=9)
    assert len(last["items"]) == 9 and last["next_cursor"] is None


async def test_a_bad_cursor_is_a_422_naming_cursor(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=2, repetitions=1)
    path = f"/api/v1/runs/{run['id']}/results"
    for cursor in ("not a cursor", "MXwy fA", "Zm9v", "LTF8MA", "MXwyfDM", "é"):
        response = await client.get(path, params={"cursor": cursor}, headers=owner.headers)
        assert_problem(response, 422, field="cursor")
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await crud.insert_results(session, [_result(owner, run, p, 0) for p in range(2)])
    first = (await client.get(path, params={"limit": 1}, headers=owner.headers)).json()
    valid = first["next_cursor"]
    combined = await client.get(path, params={"cursor": valid, "offset": 5}, headers=owner.headers)
    assert_problem(combined, 422, field="cursor")
    assert (
        await client.get(path, params={"cursor": valid}, headers=owner.headers)
    ).status_code == 200


async def test_a_cursor_of_another_list_is_refused(client, database):
    """A cursor is a place in one list: taken to another run's, or to the same run's under
    another status filter, it would skip rows unseen."""
    owner = await register(client)
    run, other = [await _run(client, owner, cases=4, repetitions=1) for _ in range(2)]
    async with database.transaction(Tenant(owner.organization_id)) as session:
        for listed in (run, other):
            await crud.insert_results(session, [_result(owner, listed, p, 0) for p in range(4)])
    path = f"/api/v1/runs/{run['id']}/results"
    page = (await client.get(path, params={"limit": 1}, headers=owner.headers)).json()
    elsewhere = await client.get(
        f"/api/v1/runs/{other['id']}/results",
        params={"cursor": page["next_cursor"]},
        headers=owner.headers,
    )
    assert "another list" in assert_problem(elsewhere, 422, field="query.cursor")["detail"]
    filtered = await client.get(
        path, params={"cursor": page["next_cursor"], "status": "passed"}, headers=owner.headers
    )
    assert_problem(filtered, 422, field="query.cursor")
    followed = await client.get(path, params={"cursor": page["next_cursor"]}, headers=owner.headers)
    assert [r["position"] for r in followed.json()["items"]] == [1, 2, 3]


async def test_another_organizations_run_is_a_404_with_a_cursor(client, database):
    owner, stranger = await register(client), await register(client)
    run = await _run(client, owner, cases=2, repetitions=1)
    response = await client.get(
        f"/api/v1/runs/{run['id']}/results", params={"cursor": "MHww"}, headers=stranger.headers
    )
    assert_problem(response, 404)


async def test_each_filters_total_is_the_number_of_results_it_lists(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=10, repetitions=1)
    statuses = ["passed"] * 5 + ["failed"] * 3 + ["errored"] * 2
    rows = [_result(owner, run, p, 0) | {"status": s} for p, s in enumerate(statuses)]
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await crud.insert_results(session, rows)

    for status in (None, "passed", "failed", "errored"):
        params = {"limit": 100} | ({"status": status} if status else {})
        page = await _page(client, owner, run, **params)
        listed = [item["status"] for item in page["items"]]
        assert page["total"] == len(listed) == (statuses.count(status) if status else 10)
        assert all(s == status for s in listed) if status else sorted(listed) == sorted(statuses)


async def test_a_listed_result_shows_every_column_as_written_and_as_read_alone(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=2, repetitions=1)
    written = _result(owner, run, 1, 0) | {
        "status": "errored",
        "cost": 0.25,
        "error_type": "timeout",
        "error_message": "no answer within 30 s",
        "trajectory": [{"step": 1, "text": "thinking"}],
    }
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await crud.insert_results(session, [written])

    [listed] = (await _page(client, owner, run))["items"]
    alone = await client.get(f"/api/v1/results/{written['id']}", headers=owner.headers)
    assert alone.status_code == 200 and alone.json() == listed
    shown = {key: listed[key] for key in written if key != "organization_id"}
    expected = {
        key: str(value) if isinstance(value, uuid.UUID) else value
        for key, value in written.items()
        if key != "organization_id"
    }
    assert shown == expected and listed["evaluations"] == []
    assert set(listed) == set(ResultRead.model_fields)  # and nothing else (no organization)
