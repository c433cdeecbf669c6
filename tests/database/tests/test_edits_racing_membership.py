"""Edits and deletions of tests while their sets' members change and the sets are published,
all at once: every request takes its locks in one order (sets in id order, then tests), so
none meets a deadlock (a 409 asking to send it again)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable

from httpx import Response

from database.test_sets import service as test_set_service
from database.test_sets.crud import get_test_set
from tests.helpers import create_project, create_test_set, tenant_session, until_waiting_for_locks

TESTS = "/api/v1/tests"
SETS = "/api/v1/test-sets"
ROUNDS = 2
REQUESTS_PER_ROUND = 120
DELETIONS_PER_ROUND = 10


async def _tests(client, owner, project: str, count: int) -> list[str]:
    body = {"project_id": project, "tests": [{"input": f"case {i}"} for i in range(count)]}
    created = await client.post(f"{TESTS}/bulk", json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    return created.json()["ids"]


async def test_an_edit_whose_test_joins_a_set_meanwhile_locks_that_set_in_order(
    committed_client, committed_owner, committed_database, owner_engine
):
    """The edit of `joining` read its sets ({later}) and waited for the test while it joined
    `earlier`; the edit of `both` locked `earlier`, then waited for `later`. Once the test had
    joined, the first edit's trigger locked `earlier` while it held `later`: a deadlock, one of
    the two a 409. The first edit now sees the new set and takes its locks again, in order."""
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    joining, both = await _tests(client, owner, project, 2)
    sets = [(await create_test_set(client, owner, project, [both]))["id"] for _ in range(2)]
    earlier, later = sorted(sets, key=uuid.UUID)  # the order sets are locked in
    joined = await client.post(
        f"{SETS}/{later}/tests", json={"test_ids": [joining]}, headers=owner.headers
    )
    assert joined.status_code == 200, joined.text
    async with tenant_session(committed_database, owner.organization_id) as adding:
        held = await get_test_set(adding, uuid.UUID(earlier), for_update=True)
        assert held is not None
        await test_set_service.append_members(adding, held, [uuid.UUID(joining)])
        first = asyncio.create_task(
            client.patch(f"{TESTS}/{joining}", json={"input": "new"}, headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 1, first)  # for the test
        second = asyncio.create_task(
            client.patch(f"{TESTS}/{both}", json={"input": "new"}, headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 2, second)  # for `earlier`
    assert ((await first).status_code, (await second).status_code) == (200, 200)
    for test_set in sets:
        published = await client.post(f"{SETS}/{test_set}/versions", headers=owner.headers)
        cases = await client.get(
            f"{SETS}/{test_set}/versions/{published.json()['number']}/cases",
            headers=owner.headers,
        )
        assert {case["case"]["input"] for case in cases.json()["items"]} == {"new"}


async def test_edits_deletions_and_membership_changes_at_once_never_deadlock(
    committed_client, committed_owner
):
    """Before, a mix of edits, deletions, replacements, additions and publishes of a few sets
    sharing their tests met deadlocks (409s) in 1 request in 5 to 10."""
    client, owner = committed_client, committed_owner
    picks = random.Random(7)
    project = (await create_project(client, owner))["id"]
    kept = await _tests(client, owner, project, 60)
    doomed = await _tests(client, owner, project, DELETIONS_PER_ROUND * ROUNDS)
    sets = [
        (await create_test_set(client, owner, project, picks.sample(kept + doomed, 40)))["id"]
        for _ in range(4)
    ]

    def request(number: int, dooming: list[str]) -> tuple[str, bool, Awaitable[Response]]:
        """A request's kind, whether it names a test deleted in its round, and the request.
        An addition names one, racing with its deletion."""
        kind = picks.choice(("replace", "add", "edit", "edit", "publish"))
        members = f"{SETS}/{picks.choice(sets)}/tests"
        if kind == "replace":
            body = {"test_ids": picks.sample(kept, 20)}
            return kind, False, client.put(members, json=body, headers=owner.headers)
        if kind == "add":
            body = {"test_ids": [*picks.sample(kept, 9), picks.choice(dooming)]}
            return kind, True, client.post(members, json=body, headers=owner.headers)
        if kind == "edit":
            test = picks.choice(kept + dooming)
            change = {"input": f"edit {number}"}
            edit = client.patch(f"{TESTS}/{test}", json=change, headers=owner.headers)
            return kind, test in dooming, edit
        versions = members.replace("/tests", "/versions")
        return kind, False, client.post(versions, headers=owner.headers)

    statuses: Counter[tuple[str, int]] = Counter()
    unexpected: Counter[tuple[str, int]] = Counter()
    for round_number in range(ROUNDS):
        dooming = doomed[round_number * DELETIONS_PER_ROUND :][:DELETIONS_PER_ROUND]
        sent = [request(n, dooming) for n in range(REQUESTS_PER_ROUND)]
        sent += [
            ("delete", True, client.delete(f"{TESTS}/{test}", headers=owner.headers))
            for test in dooming
        ]
        picks.shuffle(sent)
        responses = await asyncio.gather(*(call for _, _, call in sent))
        for (kind, names_a_deleted_test, _), response in zip(sent, responses, strict=True):
            statuses[(kind, response.status_code)] += 1
            # A request naming a deleted test is refused: unknown (404) or not the project's.
            allowed = {200, 201, 204} | ({404, 422} if names_a_deleted_test else set())
            if response.status_code not in allowed:
                unexpected[(kind, response.status_code)] += 1
    assert not unexpected, (dict(unexpected), dict(statuses))
    assert statuses[("delete", 204)] == len(doomed)
