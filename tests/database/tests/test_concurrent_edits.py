"""Edits of a test at the same time as other edits and as its joining a set: edits take turns,
each judging the test as the one before left it, and a set's next version holds the text that
was committed last, whichever committed first."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from database.test_sets import service as test_set_service
from database.test_sets.crud import get_test_set
from database.tests import crud as test_crud
from tests.helpers import (
    assert_problem,
    create_project,
    create_test,
    create_test_set,
    tenant_session,
    until_waiting_for_locks,
)

TESTS = "/api/v1/tests"
SETS = "/api/v1/test-sets"


async def _published_input(client, owner, test_set_id: str) -> tuple[int, str]:
    """The number of the set's version holding its cases now, and its one case's input."""
    published = await client.post(f"{SETS}/{test_set_id}/versions", headers=owner.headers)
    assert published.status_code in (200, 201), published.text
    number = published.json()["number"]
    cases = await client.get(f"{SETS}/{test_set_id}/versions/{number}/cases", headers=owner.headers)
    [case] = cases.json()["items"]
    return number, case["case"]["input"]


async def _test_in_a_set(client, owner) -> tuple[dict, dict]:
    """A test reading "old", in a set of its project."""
    project = (await create_project(client, owner))["id"]
    test_set = await create_test_set(client, owner, project)
    test = await create_test(client, owner, project, input="old")
    joined = await client.post(
        f"{SETS}/{test_set['id']}/tests", json={"test_ids": [test["id"]]}, headers=owner.headers
    )
    assert joined.status_code == 200, joined.text
    return test, test_set


async def test_two_edits_at_once_take_turns_and_the_second_sees_the_first(
    committed_client, committed_owner, owner_engine
):
    """Each cleared one kind of input, judging the test with the other: the second's update
    broke the table's check, a 500. It is judged against the first's result: a 422."""
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    messages = [{"role": "user", "content": "hi"}]
    test = await create_test(client, owner, project, input="hello", messages=messages)
    path = f"{TESTS}/{test['id']}"
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM tests WHERE id = :t FOR UPDATE"), {"t": test["id"]}
        )
        first = asyncio.create_task(client.patch(path, json={"input": None}, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 1)
        second = asyncio.create_task(
            client.patch(path, json={"messages": None}, headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 2)
        await held.rollback()
    assert (await first).status_code == 200
    assert_problem(await second, 422, field="input")
    now = (await client.get(path, headers=owner.headers)).json()
    assert (now["input"], now["messages"]) == (None, messages)


async def test_a_test_joining_a_set_while_it_is_edited_is_published_as_edited(
    committed_client, committed_owner, committed_database, owner_engine
):
    """The edit had begun when the test joined the set: its trigger found no set to move on,
    and the set's version kept the old text for good. Joining now waits for the edit."""
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    test_set = await create_test_set(client, owner, project)
    test = await create_test(client, owner, project, input="old")
    async with tenant_session(committed_database, owner.organization_id) as editing:
        await editing.execute(
            text("UPDATE tests SET input = 'new' WHERE id = :t"), {"t": uuid.UUID(test["id"])}
        )
        joining = asyncio.create_task(
            client.post(
                f"{SETS}/{test_set['id']}/tests",
                json={"test_ids": [test["id"]]},
                headers=owner.headers,
            )
        )
        await until_waiting_for_locks(owner_engine, 1, joining)
        # Published as a run would publish it, the edit still under way.
        publishing = asyncio.create_task(
            client.post(f"{SETS}/{test_set['id']}/versions", headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 2, publishing)
    assert (await joining).status_code == 200
    assert (await publishing).status_code == 201
    assert (await _published_input(client, owner, test_set["id"])) == (1, "new")


async def test_a_test_edited_while_it_joins_a_set_moves_the_set_on(
    committed_client, committed_owner, committed_database, owner_engine
):
    """The other order: the test joined (and the set was published) while an edit waited.
    The edit's trigger now sees the membership, so the next version takes the edit."""
    client, owner = committed_client, committed_owner
    project = (await create_project(client, owner))["id"]
    test_set = await create_test_set(client, owner, project)
    test = await create_test(client, owner, project, input="old")
    async with tenant_session(committed_database, owner.organization_id) as joining:
        held_set = await get_test_set(joining, uuid.UUID(test_set["id"]), for_update=True)
        assert held_set is not None
        await test_set_service.append_members(joining, held_set, [uuid.UUID(test["id"])])
        editing = asyncio.create_task(
            client.patch(f"{TESTS}/{test['id']}", json={"input": "new"}, headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 1, editing)
        version, _ = await test_set_service.publish(joining, held_set)
        assert version.number == 1
    assert (await editing).status_code == 200
    assert await _published_input(client, owner, test_set["id"]) == (2, "new")


async def test_a_deadlock_is_a_409_and_changes_nothing(
    committed_client, committed_owner, owner_engine
):
    """An edit locks its test's sets, then the test. A transaction that takes them the other
    way round deadlocks with it; PostgreSQL undoes the edit, which is told to send it again."""
    client, owner = committed_client, committed_owner
    test, test_set = await _test_in_a_set(client, owner)
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(text("SELECT 1 FROM tests WHERE id = :t FOR SHARE"), {"t": test["id"]})
        editing = asyncio.create_task(
            client.patch(f"{TESTS}/{test['id']}", json={"input": "new"}, headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 1, editing)
        await holder.execute(
            text("SELECT 1 FROM test_sets WHERE id = :s FOR UPDATE"), {"s": test_set["id"]}
        )
        await held.rollback()
    assert_problem(await editing, 409)
    now = await client.get(f"{TESTS}/{test['id']}", headers=owner.headers)
    assert now.json()["input"] == "old"


async def test_an_edit_and_a_replacement_of_its_sets_members_wait_for_each_other_cleanly(
    committed_client, committed_owner, owner_engine
):
    """Replacing a set's members locks the set, then its tests; an edit locks the test's sets
    first, then the test. Had the edit locked its test first, the replacement (holding the
    set) would wait for the test while the edit's trigger waited for the set: a deadlock."""
    client, owner = committed_client, committed_owner
    test, test_set = await _test_in_a_set(client, owner)
    members = f"{SETS}/{test_set['id']}/tests"
    body = {"test_ids": [test["id"]]}
    async with owner_engine.connect() as holder:
        held = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM test_sets WHERE id = :s FOR UPDATE"), {"s": test_set["id"]}
        )
        replacing = asyncio.create_task(client.put(members, json=body, headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 1, replacing)
        editing = asyncio.create_task(
            client.patch(f"{TESTS}/{test['id']}", json={"input": "new"}, headers=owner.headers)
        )
        await until_waiting_for_locks(owner_engine, 2, editing)
        await held.rollback()
    assert (await replacing).status_code == 200
    assert (await editing).status_code == 200
    assert (await _published_input(client, owner, test_set["id"]))[1] == "new"


async def test_an_edit_and_a_deletion_of_one_test_wait_for_each_other_cleanly(
    committed_client, committed_owner, committed_database, owner_engine
):
    """A deletion locked the test, then (as its memberships went) its sets; an edit locks
    them the other way round: the two deadlocked, and one was undone. A deletion now takes
    them in the edit's order."""
    client, owner = committed_client, committed_owner
    test, _ = await _test_in_a_set(client, owner)
    test_id = uuid.UUID(test["id"])
    async with tenant_session(committed_database, owner.organization_id) as editing:
        # The edit between its two statements: its test's sets locked, not yet the test.
        await editing.execute(test_crud._LOCK_SETS_OF_TEST, {"test": test_id})
        deleting = asyncio.create_task(client.delete(f"{TESTS}/{test_id}", headers=owner.headers))
        await until_waiting_for_locks(owner_engine, 1, deleting)
        edited = await test_crud.get_test_to_edit(editing, test_id)
        assert edited is not None
        edited.input = "new"
        await editing.flush()  # the edit's UPDATE, and its trigger's update of the set
    assert (await deleting).status_code == 204
    assert (await client.get(f"{TESTS}/{test_id}", headers=owner.headers)).status_code == 404
